#!/usr/bin/env bash
# Makes this machine ready for the test suite: the Debian packages the tests
# call, and a MariaDB server answering on 127.0.0.1:3306.
set -euo pipefail

# mariadb-server, mariadb-client, galera-4, rsync, iproute2 and procps run the private
# servers and the Galera cluster of tests/outage and tests/cluster (scripts/galera).
packages=(nghttp2-client mariadb-server mariadb-client galera-4 rsync iproute2 procps)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! mariadb-admin -h127.0.0.1 -uroot ping >/dev/null 2>&1; then
  echo "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 60); do
    mariadb-admin -h127.0.0.1 -uroot ping >/dev/null 2>&1 && break
    sleep 0.5
  done
  mariadb-admin -h127.0.0.1 -uroot ping >/dev/null
fi
