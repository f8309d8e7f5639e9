"""mobilezoo.bench"""
