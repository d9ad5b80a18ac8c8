"""bodycam.device"""
