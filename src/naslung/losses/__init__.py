"""naslung.losses"""
