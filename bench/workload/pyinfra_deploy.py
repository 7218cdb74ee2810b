"""The benchmark workload for pyinfra (bench/workload/spec.py states it; every tool's file
must leave the same result). `root` is host data set by the generated inventory.
Only describes operations; pyinfra's CLI runs it.
"""

from io import StringIO

from pyinfra import host
from pyinfra.operations import files, server

CONTENT = """\
# app.conf: written by the opsrun benchmark (bench/workload/)
[server]
listen = 0.0.0.0:8080
workers = 4
keepalive_timeout = 65
max_body_size = 10m

[log]
level = info
path = /var/log/app/app.log
rotate = daily
keep = 14

[cache]
enabled = true
size_mb = 256
ttl_seconds = 300
"""

root = host.data.root
files.directory(name="dir", path=f"{root}/conf.d", mode="755")
files.put(name="conf", src=StringIO(CONTENT), dest=f"{root}/conf.d/app.conf", mode="644")
files.line(name="setting", path=f"{root}/settings.ini", line="^max_connections",
           replace="max_connections = 100")
server.shell(name="uname", commands=["uname -a"])
server.shell(name="whoami", commands=["id"])
server.shell(name="disk", commands=["df -h /"])
server.shell(name="load", commands=["uptime"])
server.shell(name="echo", commands=["echo x"])
files.file(name="stale", path=f"{root}/stale.txt", present=False)
