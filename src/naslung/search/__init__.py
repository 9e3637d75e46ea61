"""naslung.search"""
