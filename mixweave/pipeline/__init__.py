"""mixweave.pipeline"""
