"""How the API takes an upload: the multipart body streamed into storage under limits, its type
checked by its bytes, the message published with a broker confirm, and its status registered."""
