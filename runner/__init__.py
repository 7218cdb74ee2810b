"""opsrun: declarative YAML playbooks for servers, Proxmox clusters and Android devices.

validate -> plan -> apply, with every change previewed and journaled.
"""

__version__ = "0.1.0"
