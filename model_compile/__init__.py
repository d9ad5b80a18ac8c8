"""bodycam.model_compile"""
