"""Spreadsheet and CSV files in and out: sniffing, bounded-memory reading that keeps every cell's value
and kind, hostile-workbook guards, and the streaming xlsx writer. Imports nothing else of AIMQ."""
