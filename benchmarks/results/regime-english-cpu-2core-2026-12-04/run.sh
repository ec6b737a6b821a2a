#!/bin/bash
# (Re)start the two workers; unfinished claims of killed workers are released first.
cd /work/regime2
for c in claims/*; do [ -e "$c/done" ] || rm -rf "$c"; done
setsid nohup bash queue.sh >> w1.log 2>&1 &
sleep 5
setsid nohup bash queue.sh >> w2.log 2>&1 &
