"""Aspect metrics: what a reconstruction keeps of content, prosody, identity and naturalness."""
