#!/usr/bin/env bash
# Installs cdtrainer as a system service on Debian/Ubuntu. Run as root from a checkout; safe to
# run again (upgrades the binaries and the unit, never touches an existing config, token, env
# file or hostfile).
#
#   sudo ./deploy/install.sh             # one machine: cdtrainerd-single.service
#   sudo ./deploy/install.sh --head      # head node of a cluster: cdtrainerd.service (mpirun --hostfile)
#   sudo ./deploy/install.sh --node      # every other node of a cluster: binaries, user, config; no unit
#   ./deploy/install.sh --dry-run [...]  # prints what it would do, changes nothing (no root needed)
#
# What it does, in order (docs/cluster.md explains the cluster parts):
#  1. the Debian packages (deploy/install-deps.sh); Swift 6.1+ must be on PATH (or --swift);
#  2. release builds of cdtrainerd and cdctl (as the owner of the checkout, not as root);
#  3. system group and user `cdtrainer`, home /var/lib/cdtrainerd (also the daemon's state);
#     login shell /usr/sbin/nologin, or /bin/bash with --node (the head's mpirun starts ranks there
#     over ssh, and sshd runs commands through the user's shell);
#  4. /etc/cdtrainerd/: cdtrainerd.toml (from configs/cdtrainerd.toml with token_file and the
#     state dir set; only when missing; cdtrainerd.toml.example is refreshed every time), token
#     (random, 0640 root:cdtrainer, only when missing, never printed), env (systemd
#     EnvironmentFile template, only when missing), hostfile.example, and with --head a hostfile
#     listing only this machine (only when missing);
#  5. the binaries in PREFIX/lib/cdtrainer/ (with the resource folders SwiftPM builds beside
#     them) and links PREFIX/bin/cdtrainerd, PREFIX/bin/cdctl;
#  6. with --head: an ssh key for the cdtrainer user (printed: add it to every node); with
#     --node: ~cdtrainer/.ssh/authorized_keys (empty) for that key;
#  7. the systemd unit (--single, --head), enabled and started, or restarted when the binaries
#     or the unit changed (a restart checkpoints running jobs; they resume). --no-start skips that.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

service_user=cdtrainer
etc_dir=/etc/cdtrainerd
state_dir=/var/lib/cdtrainerd
unit_dir=/etc/systemd/system

mode=single
start=1
prefix=/usr/local
dry_run=0
swift_path=""
binaries=""

usage() {
    cat <<EOF
usage: deploy/install.sh [--single | --head | --node] [options]

Installs cdtrainerd and cdctl as a system service (Debian/Ubuntu, as root). Safe to run again.

modes:
  --single        one machine: cdtrainerd-single.service (mpirun -n 1); the default
  --head          head node of a cluster: cdtrainerd.service (mpirun --hostfile $etc_dir/hostfile,
                  one rank per node); creates an ssh key for the $service_user user
  --node          any other node of a cluster: binaries, user (with a login shell for ssh), config
                  and token, no unit (the head node's mpirun starts cdtrainerd here over ssh)

options:
  --no-start      install the unit but do not enable, start or restart it
  --prefix DIR    install under DIR (default /usr/local): DIR/lib/cdtrainer, DIR/bin. Must be the
                  same on every node of a cluster (the head starts DIR/bin/cdtrainerd everywhere)
  --swift PATH    the swift executable to build with (when it is not on root's PATH)
  --binaries DIR  install prebuilt binaries from DIR (cdtrainerd, cdctl, *.resources) instead of
                  building; they need the same Swift toolchain path and packages as where they were built
  --dry-run, -n   print what would be done; change nothing
  --help, -h      this text

Files it never overwrites once they exist: $etc_dir/cdtrainerd.toml, $etc_dir/token, $etc_dir/env,
$etc_dir/hostfile. Show the token with: sudo cat $etc_dir/token
EOF
}

die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
# done_note: reports a change that was made (silent in a dry run, where the [dry-run] lines say it).
done_note() { [ "$dry_run" = 1 ] || note "$@"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --single) mode="single" ;;
        --head) mode="head" ;;
        --node) mode="node" ;;
        --no-start) start=0 ;;
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix="$2"; shift ;;
        --prefix=*) prefix="${1#*=}" ;;
        --swift) [ $# -ge 2 ] || die "--swift needs a path"; swift_path="$2"; shift ;;
        --swift=*) swift_path="${1#*=}" ;;
        --binaries) [ $# -ge 2 ] || die "--binaries needs a directory"; binaries="$2"; shift ;;
        --binaries=*) binaries="${1#*=}" ;;
        --dry-run | -n) dry_run=1 ;;
        --help | -h) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

# The prefix ends up in the unit's ExecStart line: absolute, no spaces or shell/systemd specials.
[[ "$prefix" =~ ^/[A-Za-z0-9._/-]*$ ]] || die "--prefix must be an absolute path of letters, digits, . _ - / (got '$prefix')"
prefix="${prefix%/}"
[ -n "$prefix" ] || prefix=/
lib_dir="$prefix/lib/cdtrainer"
bin_dir="$prefix/bin"
[ "$prefix" = / ] && { lib_dir=/lib/cdtrainer; bin_dir=/bin; }

case "$mode" in
    single) unit=cdtrainerd-single.service; other_unit=cdtrainerd.service ;;
    head) unit=cdtrainerd.service; other_unit=cdtrainerd-single.service ;;
    node) unit=""; other_unit="" ;;
esac

# ---------------------------------------------------------------------------------------------
# Helpers. Every change goes through `run` (printed instead of done in a dry run); checks that
# only read (getent, test, cmp, stat) run in both modes, so a dry run tells what this machine needs.

run() {
    if [ "$dry_run" = 1 ]; then
        local q
        q="$(printf '%q ' "$@")"
        printf '    [dry-run] %s\n' "${q% }"
    else
        "$@"
    fi
}

changed=0 # set when a binary, resource folder or unit file was replaced (the service restarts)

# put_file SRC DEST MODE OWNER:GROUP: installs SRC as DEST unless DEST already has that content,
# mode and owner. The new file is written beside DEST and renamed over it, so a running daemon
# keeps its old binary until it restarts. Sets put_changed=1 when the content changed.
put_file() {
    local src="$1" dest="$2" mode="$3" owner="$4" tmp
    put_changed=0
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        if [ "$(stat -c '%a %U:%G' "$dest")" != "${mode#0} $owner" ]; then
            run chown "$owner" "$dest"
            run chmod "$mode" "$dest"
        fi
        return 0
    fi
    tmp="$(dirname "$dest")/.$(basename "$dest").new"
    run install -m "$mode" -o "${owner%%:*}" -g "${owner#*:}" "$src" "$tmp"
    run mv -f "$tmp" "$dest"
    done_note "installed $dest"
    put_changed=1
}

# put_new_file DEST MODE OWNER:GROUP < CONTENT: creates DEST from stdin only when it does not exist.
put_new_file() {
    local dest="$1" mode="$2" owner="$3" tmp
    if [ -e "$dest" ]; then
        note "kept existing $dest"
        cat >/dev/null
        return 0
    fi
    if [ "$dry_run" = 1 ]; then
        local content
        content="$(cat)"
        if [ "$(printf '%s\n' "$content" | wc -l)" -le 25 ]; then
            note "[dry-run] would create $dest ($mode $owner):"
            printf '%s\n' "$content" | sed 's/^/        | /'
        else
            note "[dry-run] would create $dest ($mode $owner, $(printf '%s\n' "$content" | wc -l) lines)"
        fi
        return 0
    fi
    tmp="$(mktemp "$(dirname "$dest")/.$(basename "$dest").XXXXXX")"
    cat >"$tmp"
    chown "$owner" "$tmp"
    chmod "$mode" "$tmp"
    mv "$tmp" "$dest"
    note "created $dest"
}

# ensure_dir DIR MODE OWNER:GROUP
ensure_dir() {
    local dir="$1" mode="$2" owner="$3"
    if [ -d "$dir" ] && [ "$(stat -c '%a %U:%G' "$dir")" = "${mode#0} $owner" ]; then return 0; fi
    run install -d -m "$mode" -o "${owner%%:*}" -g "${owner#*:}" "$dir"
}

# put_tree SRC DEST: replaces the folder DEST with a copy of SRC (root-owned, world-readable)
# unless they are equal.
put_tree() {
    local src="$1" dest="$2"
    if [ -d "$dest" ] && diff -r -q "$src" "$dest" >/dev/null 2>&1; then return 0; fi
    run rm -rf "$dest.new"
    run cp -R "$src" "$dest.new"
    run chown -R root:root "$dest.new"
    run chmod -R u=rwX,go=rX "$dest.new"
    run rm -rf "$dest"
    run mv "$dest.new" "$dest"
    done_note "installed $dest/"
    changed=1
}

# ensure_link TARGET LINK
ensure_link() {
    local target="$1" link="$2"
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then return 0; fi
    [ -d "$link" ] && [ ! -L "$link" ] && die "$link is a folder; remove it first"
    run ln -sfn "$target" "$link"
    done_note "linked $link -> $target"
}

systemd_running() { [ -d /run/systemd/system ]; }

# ---------------------------------------------------------------------------------------------
# 0. Preconditions.

say "cdtrainer install: mode $mode, prefix $prefix$([ "$dry_run" = 1 ] && echo ', dry run (nothing is changed)')"
if [ "$(id -u)" -ne 0 ] && [ "$dry_run" != 1 ]; then
    die "run as root (sudo $0 ...), or try --dry-run"
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    die "this installer is for Debian/Ubuntu (apt-get, dpkg-query); see README.md for the packages"
fi
[ -f "$repo/configs/cdtrainerd.toml" ] || die "$repo/configs/cdtrainerd.toml is missing: run this from a cdtrainer checkout"
[ -z "$unit" ] || [ -f "$repo/systemd/$unit" ] || die "$repo/systemd/$unit is missing"

if [ -n "$swift_path" ]; then
    [ -x "$swift_path" ] || die "--swift $swift_path is not an executable"
    PATH="$(cd "$(dirname "$swift_path")" && pwd):$PATH"
    export PATH
fi
if ! command -v swift >/dev/null; then
    msg="no 'swift' on PATH (sudo resets PATH): pass --swift /path/to/usr/bin/swift, or run sudo env \"PATH=\$PATH\" $0 ..."
    if [ "$dry_run" = 1 ]; then warn "$msg"; else die "$msg"; fi
fi

# ---------------------------------------------------------------------------------------------
# 1. Packages.

say "Debian packages (deploy/install-deps.sh)"
run "$repo/deploy/install-deps.sh"
if [ "$mode" != node ] && [ "$dry_run" != 1 ] && [ ! -x /usr/bin/mpirun ]; then
    die "/usr/bin/mpirun is missing (openmpi-bin); the units start it by that path"
fi

# ---------------------------------------------------------------------------------------------
# 2. Binaries: build (as the checkout's owner, so root leaves no root-owned files in a user's
#    checkout) or take prebuilt ones.

if [ -n "$binaries" ]; then
    say "prebuilt binaries from $binaries"
    bin_path="$(cd "$binaries" && pwd)" || die "--binaries $binaries: no such folder"
else
    owner="$(stat -c %U "$repo")"
    as_owner=()
    if [ "$(id -u)" -eq 0 ] && [ "$owner" != root ]; then
        as_owner=(runuser -u "$owner" -- env "PATH=$PATH")
    fi
    say "release build in $repo${as_owner[*]:+ (as $owner)}"
    for product in cdtrainerd cdctl; do
        run "${as_owner[@]}" swift build --package-path "$repo" -c release --product "$product"
    done
    bin_path="$repo/.build/release"
    if [ "$dry_run" != 1 ]; then
        bin_path="$("${as_owner[@]}" swift build --package-path "$repo" -c release --show-bin-path)"
    fi
fi
for exe in cdtrainerd cdctl; do
    if [ ! -x "$bin_path/$exe" ]; then
        if [ "$dry_run" = 1 ]; then warn "$bin_path/$exe does not exist yet (the build makes it)"; else die "$bin_path/$exe is missing"; fi
    fi
done

# ---------------------------------------------------------------------------------------------
# 3. The service user.

say "system user $service_user (home $state_dir)"
login_shell=/usr/sbin/nologin
[ "$mode" = node ] && login_shell=/bin/bash
if ! getent group "$service_user" >/dev/null; then
    run groupadd --system "$service_user"
    done_note "created group $service_user"
fi
if ! getent passwd "$service_user" >/dev/null; then
    run useradd --system --gid "$service_user" --home-dir "$state_dir" --no-create-home \
        --shell "$login_shell" --comment "cdtrainer training daemon" "$service_user"
    done_note "created user $service_user (shell $login_shell)"
else
    IFS=: read -r _ _ _ _ _ user_home user_shell < <(getent passwd "$service_user")
    note "user $service_user exists (home $user_home, shell $user_shell)"
    if [ "$user_home" != "$state_dir" ]; then
        warn "the home of $service_user is $user_home, not $state_dir: ssh (mpirun) looks for keys in $user_home/.ssh; fix it with: usermod --home $state_dir $service_user"
    fi
    if [ "$mode" = node ] && { [ "$user_shell" = /usr/sbin/nologin ] || [ "$user_shell" = /bin/false ] || [ -z "$user_shell" ]; }; then
        # sshd runs mpirun's remote command (orted) through the login shell.
        run usermod --shell /bin/bash "$service_user"
        done_note "login shell of $service_user set to /bin/bash (mpirun reaches this node over ssh)"
    fi
fi

# ---------------------------------------------------------------------------------------------
# 4. Folders and configuration.

say "folders and configuration in $etc_dir"
ensure_dir "$etc_dir" 0750 "root:$service_user"
# The state folder and home; systemd's StateDirectory= manages it too (same owner and mode).
ensure_dir "$state_dir" 0700 "$service_user:$service_user"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The shipped config with this layout's paths: token_file uncommented, state dir set.
{
    printf '# Installed by deploy/install.sh from configs/cdtrainerd.toml. Edit freely: install.sh never\n'
    printf '# overwrites this file (it refreshes cdtrainerd.toml.example beside it). On a cluster every node\n'
    printf '# needs the same file; restart the service after a change.\n'
    sed -E -e "s|^#?[[:space:]]*token_file[[:space:]]*=.*\$|token_file = \"$etc_dir/token\"|" \
        -e "s|^dir[[:space:]]*=.*\$|dir = \"$state_dir\"|" "$repo/configs/cdtrainerd.toml"
} >"$work/cdtrainerd.toml"
if ! grep -qx "token_file = \"$etc_dir/token\"" "$work/cdtrainerd.toml" ||
    ! grep -qx "dir = \"$state_dir\"" "$work/cdtrainerd.toml"; then
    die "configs/cdtrainerd.toml has no token_file or [state] dir line to set; update install.sh"
fi
if [ "$dry_run" = 1 ]; then
    note "config = configs/cdtrainerd.toml with these changes:"
    diff "$repo/configs/cdtrainerd.toml" "$work/cdtrainerd.toml" | sed 's/^/        /' || true
fi
put_file "$work/cdtrainerd.toml" "$etc_dir/cdtrainerd.toml.example" 0644 root:root
put_new_file "$etc_dir/cdtrainerd.toml" 0640 "root:$service_user" <"$work/cdtrainerd.toml"
if [ -e "$etc_dir/cdtrainerd.toml" ] && ! cmp -s "$work/cdtrainerd.toml" "$etc_dir/cdtrainerd.toml"; then
    note "($etc_dir/cdtrainerd.toml differs from the shipped defaults: diff $etc_dir/cdtrainerd.toml{.example,})"
fi

# The API token: random, readable by the daemon's group, never printed.
token_file="$etc_dir/token"
if [ -e "$token_file" ]; then
    note "kept existing $token_file"
    if [ "$(stat -c %A "$token_file" | cut -c8-10)" != "---" ]; then
        warn "$token_file is readable by every user; tightening it to 0640"
        run chmod o= "$token_file"
    fi
elif [ "$dry_run" = 1 ]; then
    note "[dry-run] would create $token_file: 40 random characters, 0640 root:$service_user"
else
    tmp="$(mktemp "$etc_dir/.token.XXXXXX")" # 0600
    head -c 48 /dev/urandom | base64 -w 0 | tr -d '/+=' | cut -c1-40 >"$tmp"
    [ "$(tr -d '\n' <"$tmp" | wc -c)" -ge 32 ] || { rm -f "$tmp"; die "could not make a token"; }
    chown "root:$service_user" "$tmp"
    chmod 0640 "$tmp"
    mv "$tmp" "$token_file"
    note "created $token_file (show it with: sudo cat $token_file)"
fi

# The systemd EnvironmentFile: a commented template.
put_new_file "$etc_dir/env" 0600 root:root <<'EOF'
# Environment of cdtrainerd.service / cdtrainerd-single.service (systemd EnvironmentFile).
# NAME=value lines, no shell expansion. `systemctl restart cdtrainerd` (or cdtrainerd-single) after a change.

# Extra mpirun arguments, split at spaces (no quoting). On a cluster, keep MPI (btl) and its
# bootstrap (oob) on the private network, by interface name or CIDR:
#CDTRAINERD_MPI_ARGS=--mca btl_tcp_if_include 10.1.0.0/24 --mca oob_tcp_if_include 10.1.0.0/24
# Fixed ports for a firewall, and variables for the remote ranks (-x NAME, one per variable):
#CDTRAINERD_MPI_ARGS=--mca btl_tcp_if_include eth1 --mca oob_tcp_if_include eth1 --mca btl_tcp_port_min_v4 47000 --mca btl_tcp_port_range_v4 100 --mca oob_tcp_dynamic_ipv4_ports 47100-47199 -x CD_NUM_THREADS

# Compute threads per rank (default: every CPU the rank may use). Remote ranks see it only with
# -x CD_NUM_THREADS in CDTRAINERD_MPI_ARGS.
#CD_NUM_THREADS=32

# Overrides the token file for rank 0 (prefer the file: this one is root-only, but the variable
# is visible in the daemon's environment).
#CDTRAINERD_TOKEN=
EOF

put_file "$repo/deploy/hostfile.example" "$etc_dir/hostfile.example" 0644 root:root
if [ "$mode" = head ]; then
    put_new_file "$etc_dir/hostfile" 0644 root:root <<EOF
# The hosts of the cdtrainerd world, one rank each, in rank order. The first line must be this
# machine (rank 0 serves the API and keeps the state here). Add the other nodes below it, then
# systemctl restart cdtrainerd. See $etc_dir/hostfile.example.
$(hostname) slots=1
EOF
fi

# ---------------------------------------------------------------------------------------------
# 5. Binaries into PREFIX/lib/cdtrainer, linked from PREFIX/bin. cdtrainerd finds its resources
#    (the CLIP merges) next to the resolved executable, so the links work.

say "binaries in $lib_dir, links in $bin_dir"
ensure_dir "$lib_dir" 0755 root:root
[ -d "$bin_dir" ] || run install -d -m 0755 "$bin_dir" # an existing one keeps its owner and mode
for exe in cdtrainerd cdctl; do
    if [ -x "$bin_path/$exe" ]; then
        put_file "$bin_path/$exe" "$lib_dir/$exe" 0755 root:root
        [ "$put_changed" = 1 ] && changed=1
    else
        note "[dry-run] would install $bin_path/$exe as $lib_dir/$exe"
    fi
    ensure_link "$lib_dir/$exe" "$bin_dir/$exe"
done
shopt -s nullglob
for res in "$bin_path"/*.resources; do
    put_tree "$res" "$lib_dir/$(basename "$res")"
done
shopt -u nullglob

# The daemon runs as the service user: it must be able to load the Swift runtime (the binaries
# look for it in the toolchain they were built with, e.g. /opt/swift/usr/lib/swift/linux).
if [ "$dry_run" != 1 ]; then
    if ! out="$(runuser -u "$service_user" -- "$bin_dir/cdtrainerd" --help 2>&1 >/dev/null)"; then
        printf '%s\n' "$out" >&2
        rpath="$(readelf -d "$lib_dir/cdtrainerd" 2>/dev/null | sed -n 's/.*R[UN]*PATH.*\[\(.*\)\]/\1/p')"
        die "$service_user cannot run $bin_dir/cdtrainerd. The Swift runtime it loads (${rpath:-the toolchain}) must be readable by every user: install the toolchain outside /root and /home, e.g. under /opt"
    fi
fi

# ---------------------------------------------------------------------------------------------
# 6. ssh for mpirun: the head node's key, the nodes' authorized_keys.

ssh_dir="$state_dir/.ssh"
if [ "$mode" = head ]; then
    say "ssh key of $service_user (mpirun starts the other nodes' ranks with it)"
    ensure_dir "$ssh_dir" 0700 "$service_user:$service_user"
    if [ ! -e "$ssh_dir/id_ed25519" ]; then
        run runuser -u "$service_user" -- ssh-keygen -q -t ed25519 -N '' -C "$service_user@$(hostname)" -f "$ssh_dir/id_ed25519"
        done_note "created $ssh_dir/id_ed25519"
    else
        note "kept existing $ssh_dir/id_ed25519"
    fi
    put_new_file "$ssh_dir/config" 0600 "$service_user:$service_user" <<'EOF'
# ssh settings of the cdtrainer user (written once by deploy/install.sh). mpirun runs
# `ssh NODE orted ...` for every other node of /etc/cdtrainerd/hostfile; under systemd nothing can
# answer a prompt, so fail fast instead. Host keys must already be in ~/.ssh/known_hosts.
Host *
    BatchMode yes
    ConnectTimeout 10
EOF
elif [ "$mode" = node ]; then
    say "ssh access for the head node's $service_user key"
    ensure_dir "$ssh_dir" 0700 "$service_user:$service_user"
    put_new_file "$ssh_dir/authorized_keys" 0600 "$service_user:$service_user" </dev/null
    command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] ||
        warn "no ssh server here: install openssh-server, the head node's mpirun starts cdtrainerd over ssh"
fi

# ---------------------------------------------------------------------------------------------
# 7. The systemd unit.

if [ -n "$unit" ]; then
    say "systemd unit $unit_dir/$unit"
    sed "s|/usr/local/bin/cdtrainerd|$bin_dir/cdtrainerd|g" "$repo/systemd/$unit" >"$work/$unit"
    put_file "$work/$unit" "$unit_dir/$unit" 0644 root:root
    [ "$put_changed" = 1 ] && changed=1
    if ! systemd_running; then
        warn "systemd is not running here (container?): not enabling or starting $unit"
        [ "$dry_run" = 1 ] && [ "$start" = 1 ] &&
            note "[dry-run] with systemd: systemctl daemon-reload; systemctl enable $unit; systemctl start $unit (restart when running and changed)"
    else
        run systemctl daemon-reload
        if [ "$start" = 0 ]; then
            note "not started (--no-start); later: systemctl enable --now $unit"
        else
            if systemctl is-enabled --quiet "$other_unit" 2>/dev/null || systemctl is-active --quiet "$other_unit"; then
                note "switching from $other_unit to $unit"
                run systemctl disable --now "$other_unit"
            fi
            run systemctl enable "$unit"
            if systemctl is-active --quiet "$unit"; then
                if [ "$changed" = 1 ]; then
                    note "restarting $unit: a running job checkpoints and resumes after the restart"
                    run systemctl restart "$unit"
                else
                    note "$unit is running and nothing it uses changed"
                fi
            else
                run systemctl start "$unit"
            fi
        fi
    fi
fi

# ---------------------------------------------------------------------------------------------
# What is left to do by hand.

say "done$([ "$dry_run" = 1 ] && echo ' (dry run: nothing was changed)')"
case "$mode" in
    single)
        note "status:  systemctl status cdtrainerd-single; logs: journalctl -u cdtrainerd-single -f"
        note "client:  CDCTL_TOKEN_FILE=$token_file cdctl ... (as root or a member of group $service_user)"
        note "models:  add them under [models] in $etc_dir/cdtrainerd.toml, then systemctl restart cdtrainerd-single"
        ;;
    head)
        note "1. run 'deploy/install.sh --node' on every other node (same --prefix and Swift toolchain path)"
        if [ -r "$ssh_dir/id_ed25519.pub" ]; then
            note "2. append this public key to $ssh_dir/authorized_keys on every other node:"
            note "   $(cat "$ssh_dir/id_ed25519.pub")"
        else
            note "2. append $ssh_dir/id_ed25519.pub to $ssh_dir/authorized_keys on every other node"
        fi
        note "3. record the nodes' host keys: sudo -u $service_user ssh -o BatchMode=no NODE true (once per node)"
        note "4. list the nodes in $etc_dir/hostfile (this machine first), set btl_tcp_if_include in $etc_dir/env"
        note "5. copy $etc_dir/cdtrainerd.toml to every node, then: systemctl restart cdtrainerd"
        note "see docs/cluster.md"
        ;;
    node)
        note "add the head node's $service_user public key to $ssh_dir/authorized_keys,"
        note "copy the head node's $etc_dir/cdtrainerd.toml here, and list this node in the head's hostfile"
        ;;
esac
