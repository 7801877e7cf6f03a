"""mixweave.data"""
