"""Step kinds: one module per domain (shell, proxmox, adb, llm); see base.py for the contract."""
