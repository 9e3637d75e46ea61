"""naslung.models"""
