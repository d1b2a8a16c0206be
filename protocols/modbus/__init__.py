"""Modbus register maps and decoders (Eastron SDM, SunSpec). Pure: words in, values out."""
