#!/usr/bin/env bash
# Make sure the system tools the tests drive are on PATH, installing Debian's packages when missing.
#
#   scripts/ensure-debian-tools.sh COMMAND=PACKAGE [COMMAND=PACKAGE ...]
#
# Each COMMAND missing from PATH is installed from the Debian PACKAGE with apt-get (as root, or
# through password-less sudo). Where that cannot be done (no apt-get, not root, no network), it
# stops with one line per tool saying what to install, and exits 1: the tests that need the tool
# would fail anyway, later and less clearly.
set -euo pipefail

missing_commands=()
missing_packages=()
for pair in "$@"; do
    command_name="${pair%%=*}"
    package="${pair#*=}"
    if ! command -v "$command_name" >/dev/null 2>&1; then
        missing_commands+=("$command_name")
        missing_packages+=("$package")
    fi
done
[[ ${#missing_packages[@]} -eq 0 ]] && exit 0

as_root=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        as_root=(cannot)
    fi
fi

if ! command -v apt-get >/dev/null 2>&1 || [[ ${as_root[0]:-} == cannot ]]; then
    for index in "${!missing_commands[@]}"; do
        echo "make test: '${missing_commands[$index]}' is needed by the tests and is not on PATH;" \
            "install Debian's package '${missing_packages[$index]}' (sudo apt-get install" \
            "${missing_packages[$index]}) or your system's equivalent, then re-run." >&2
    done
    exit 1
fi

echo "make test: installing Debian packages the tests need: ${missing_packages[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { "${as_root[@]}" apt-get update -qq && "${as_root[@]}" apt-get install -y -qq "${missing_packages[@]}" >/dev/null; }; then
    echo "make test: apt-get could not install ${missing_packages[*]}; install them by hand" \
        "(sudo apt-get install ${missing_packages[*]}) and re-run." >&2
    exit 1
fi
for command_name in "${missing_commands[@]}"; do
    command -v "$command_name" >/dev/null 2>&1 || {
        echo "make test: '$command_name' is still missing after apt-get install; install it by hand." >&2
        exit 1
    }
done
