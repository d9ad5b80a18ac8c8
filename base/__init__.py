"""bodycam.base"""
