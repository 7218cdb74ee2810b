"""The benchmark workload: spec.py states it once; the other files write it for each tool.

Data only; nothing here connects to a host.
"""
