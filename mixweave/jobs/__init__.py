"""mixweave.jobs"""
