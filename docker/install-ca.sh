#!/bin/sh
# Install pullcache's root CA into this node's system trust store.
#
#   sudo ./install-ca.sh [PROXY_URL]      # default: http://pullcache:3128
#
# Fetches PROXY_URL/ca.crt directly (ignoring any *_proxy variables), checks
# it is a PEM certificate and installs it as pullcache.crt:
#   Debian/Ubuntu:                    /usr/local/share/ca-certificates + update-ca-certificates
#   RHEL/Fedora/Rocky/Amazon Linux:   /etc/pki/ca-trust/source/anchors + update-ca-trust extract
# containerd and dockerd read the trusted roots only at start: restart them
# afterwards.
set -eu

usage() {
    echo "usage: $0 [PROXY_URL]   (default: http://pullcache:3128)"
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
esac
if [ "$#" -gt 1 ]; then
    usage >&2
    exit 2
fi

proxy_url=${1:-http://pullcache:3128}
proxy_url=${proxy_url%/}
ca_url="$proxy_url/ca.crt"

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

echo "fetching $ca_url"
if command -v curl >/dev/null 2>&1; then
    curl -fsS --noproxy '*' --connect-timeout 10 --max-time 60 -o "$tmp" "$ca_url" \
        || { echo "error: cannot download $ca_url" >&2; exit 1; }
elif command -v wget >/dev/null 2>&1; then
    wget -q -Y off -O "$tmp" "$ca_url" \
        || { echo "error: cannot download $ca_url" >&2; exit 1; }
else
    echo "error: neither curl nor wget is installed" >&2
    exit 1
fi

if command -v openssl >/dev/null 2>&1; then
    if ! openssl x509 -noout -in "$tmp" 2>/dev/null; then
        echo "error: $ca_url is not a PEM certificate" >&2
        exit 1
    fi
    openssl x509 -noout -subject -fingerprint -sha256 -in "$tmp"
elif ! grep -q -- '-----BEGIN CERTIFICATE-----' "$tmp"; then
    echo "error: $ca_url is not a PEM certificate" >&2
    exit 1
fi

if command -v update-ca-certificates >/dev/null 2>&1 \
    && [ -d /usr/local/share/ca-certificates ]; then
    dest=/usr/local/share/ca-certificates/pullcache.crt
    install -m 0644 "$tmp" "$dest"
    update-ca-certificates
elif command -v update-ca-trust >/dev/null 2>&1 \
    && [ -d /etc/pki/ca-trust/source/anchors ]; then
    dest=/etc/pki/ca-trust/source/anchors/pullcache.crt
    install -m 0644 "$tmp" "$dest"
    update-ca-trust extract
else
    echo "error: unknown trust store on this system." >&2
    echo "Add $ca_url to the system's trusted roots by hand (the distribution's" >&2
    echo "documentation names the folder and the command), then restart the" >&2
    echo "container runtime." >&2
    exit 1
fi

echo "installed $dest"
echo "now restart the container runtime so it loads the new root, e.g.:"
echo "  systemctl restart containerd    # or: systemctl restart docker"
