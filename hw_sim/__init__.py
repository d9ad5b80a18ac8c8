"""bodycam.hw_sim"""
