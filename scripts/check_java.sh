#!/usr/bin/env bash
# Spark 4 needs Java 17 or newer. Install the Debian JRE when missing and we may; else say what to install.
set -euo pipefail
java_major() { java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print v[1]; exit}'; }
if command -v java >/dev/null 2>&1 && [ "$(java_major)" -ge 17 ] 2>/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "wordstream: installing openjdk-17-jre-headless (Spark needs Java 17+)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  exit 0
fi
echo "wordstream: Java 17+ is required; install it (Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless)" >&2
exit 1
