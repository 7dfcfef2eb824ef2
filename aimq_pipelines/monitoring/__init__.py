"""The monitoring domain: drift of each upload against the profile of the model version that priced it."""
