# Sourced by the setup scripts: `apt_install NAME PACKAGE...` installs Debian
# packages (apt-get update first), with sudo when not root and sudo exists.
apt_install() {
    local name=$1
    shift
    local sudo=
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
        sudo=sudo
    fi
    echo "[setup-$name] installing $* (Debian packages)" >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "$@"
}
