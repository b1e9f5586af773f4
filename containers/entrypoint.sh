#!/bin/sh
# polydev-entrypoint — the entrypoint of every polydev runtime image
# (installed as /usr/local/bin/polydev-entrypoint).
#
# A task container is created with stdin open (OpenStdin + StdinOnce) and no
# credentials. This script prints a banner to stderr, waits for a launch spec
# on stdin, validates it, and execs the command so that it becomes PID 1.
#
# Launch protocol (the Rust driver implements the other side):
#
#   polydev-launch-v2             (v1 is the same without `file` lines; both are accepted)
#   arg <base64>                  zero or more, in order; argv[0] is the command; at least one
#   env <base64 of NAME=VALUE>    zero or more; NAME ~ ^[A-Za-z_][A-Za-z0-9_]*$; VALUE may be empty
#   cwd <base64>                  optional, at most one; an absolute path
#   require <base64 of NAME>      zero or more credential variables that must be set and non-empty
#   file <base64 PATH> <base64 CONTENT>
#                                 zero or more (v2); written (mode 0600, directories 0700) before
#                                 the exec; PATH is relative to $HOME (the spec's HOME if it sets
#                                 one), made of [A-Za-z0-9._-] components, no "." or ".."
#   end
#
# Every line ends with "\n"; every value is standard base64 (may be empty).
#
# Home skeleton: an image may hold the state its CLI writes under $HOME on its first run
# (root-owned, read-only: $POLYDEV_HOME_SKEL). It is copied into the home, as the task's user
# and with umask 077 (files owned by the task uid, 0600/0700 unless more restrictive already),
# so the CLI skips its first-run work. A warm pool container (WARM_POOL=true) copies it
# while idle, before it reads the spec; otherwise it is copied once the spec is valid. Either
# way it lands before the spec's files, which therefore win. A copy that fails (a read-only
# home) is reported on stderr and the launch goes on: the CLI then does its first-run work.
# Whatever follows "end" is not read; the command runs with stdin from /dev/null.
#
# Exit codes (the command's own status once it runs):
#   65  malformed launch spec, or the working directory cannot be entered
#   66  no launch spec arrived (EOF before "end", or the first line timed out)
#   78  a required credential is missing or empty
#   126 the command exists but cannot be executed
#   127 the command was not found
#   143 SIGTERM (130 SIGINT, 129 SIGHUP) arrived before the exec
#
# Output: nothing is ever written to stdout before the exec. On stderr, after a
# valid spec, the exact line "polydev-entrypoint: launch" separates the banner
# (dropped by the driver's log pump) from everything the user should see.
# No value from the spec (arguments, environment values — they may be secrets)
# is ever echoed in an error message, and no value ever appears in a process's
# argv (any user of the host can read /proc/*/cmdline): values are decoded by
# builtins and `base64 -d` on a pipe, and applied with the `export` builtin.
#
# Environment read by the script (container env, baked into the image or set at create):
#   POLYDEV_PROVIDER, POLYDEV_CLI, POLYDEV_CLI_VERSION  banner only
#   POLYDEV_SPEC_TIMEOUT   seconds to wait for the first spec line (default 60)
#   WARM_POOL=true         wait for the spec forever (a pre-started pool container)
#   POLYDEV_HOME_SKEL      the image's pre-seeded CLI home (default
#                          /usr/local/share/polydev/home-skel; absent in images without one)
#   DEBUG=true             also honoured from the spec's env: print argv, cwd and env NAMES
#
# With arguments (`docker run IMAGE codex --version`) the spec is skipped and
# the arguments are executed directly, without any credential check (the banner
# and the launch line are still printed to stderr).
#
# Shell: the script runs under bash (provider images) or busybox ash (the test
# image); both have `read -t`. Debian's /bin/sh is dash, which has no `read -t`,
# so when started by a shell other than bash and bash exists, re-exec under bash.
# The script never modifies its own environment until the very end: the spec's
# variables are exported right before the final exec, after every check, by a
# loop that reads nothing an export could have changed, so a spec variable such
# as PATH, IFS or one named like an internal variable (_pd_*) cannot change how
# this script behaves.

if [ -z "${BASH_VERSION:-}" ] && [ -x /bin/bash ] && [ -z "${_PD_REEXEC:-}" ]; then
    _PD_REEXEC=1 exec /bin/bash -- "$0" "$@"
fi
unset _PD_REEXEC

set -f  # no globbing: values are never patterns
_pd_me=polydev-entrypoint

_pd_say() { printf '%s: %s\n' "$_pd_me" "$*" >&2; }
_pd_die() { _pd_code=$1; shift; _pd_say "$*"; exit "$_pd_code"; }
_pd_malformed() { _pd_die 65 "malformed launch spec: $*"; }

# ---------------------------------------------------------------- banner
_pd_uid=$(id -u 2>/dev/null || echo '?')
if [ "$#" -gt 0 ]; then _pd_mode=args; else _pd_mode=spec; fi
_pd_say "provider=${POLYDEV_PROVIDER:-unknown} cli=${POLYDEV_CLI:-unknown}" \
    "version=${POLYDEV_CLI_VERSION:-unknown} uid=$_pd_uid mode=$_pd_mode" \
    "warm_pool=${WARM_POOL:-false}"

# ---------------------------------------------------------------- helpers

# _pd_valid_b64 STRING: standard base64 with padding (the empty string is valid).
_pd_valid_b64() {
    case $1 in *[!A-Za-z0-9+/=]*) return 1 ;; esac
    [ $((${#1} % 4)) -eq 0 ] || return 1
    _pd_t=${1%=}
    _pd_t=${_pd_t%=}
    case $_pd_t in *=*) return 1 ;; esac
    return 0
}

# _pd_decode B64: decoded bytes in $_pd_out ("-" decodes to the empty string).
# Command substitution strips trailing newlines, so append an "x" after the
# data and strip it again.
_pd_decode() {
    if [ "$1" = - ]; then _pd_out=; return 0; fi
    _pd_out=$(printf '%s' "$1" | base64 -d 2>/dev/null && printf x) || return 1
    case $_pd_out in *x) _pd_out=${_pd_out%x} ;; *) return 1 ;; esac
}

_pd_valid_name() {
    case $1 in '' | [0-9]* | *[!A-Za-z0-9_]*) return 1 ;; esac
    return 0
}

# _pd_resolve CMD PATHVALUE: 0 if CMD can be executed; otherwise prints why and
# exits 126/127 like a shell would. PATHVALUE is the PATH the command will see.
_pd_resolve() {
    case $1 in
    '') _pd_die 127 "command not found: the command (argv[0]) is empty" ;;
    *=*) _pd_die 126 "cannot execute a command whose name contains '=': $1" ;;
    */*)
        if [ -d "$1" ]; then _pd_die 126 "cannot execute $1: is a directory"; fi
        if [ ! -e "$1" ]; then _pd_die 127 "command not found: $1 (no such file)"; fi
        if [ ! -x "$1" ]; then _pd_die 126 "cannot execute $1: permission denied"; fi
        return 0
        ;;
    esac
    _pd_denied=
    _pd_last=
    _pd_rest=$2
    while :; do
        case $_pd_rest in
        *:*) _pd_dir=${_pd_rest%%:*}; _pd_rest=${_pd_rest#*:} ;;
        *) _pd_dir=$_pd_rest; _pd_rest= ; _pd_last=1 ;;
        esac
        [ -n "$_pd_dir" ] || _pd_dir=.
        if [ -f "$_pd_dir/$1" ]; then
            if [ -x "$_pd_dir/$1" ]; then return 0; fi
            _pd_denied="$_pd_dir/$1"
        fi
        if [ -n "$_pd_last" ]; then break; fi
    done
    if [ -n "$_pd_denied" ]; then _pd_die 126 "cannot execute $_pd_denied: permission denied"; fi
    _pd_die 127 "command not found: $1 (searched PATH)"
}

# ---------------------------------------------------------------- args mode
if [ "$_pd_mode" = args ]; then
    _pd_say launch
    _pd_resolve "$1" "${PATH:-}"
    exec env -- "$@"
fi

# ---------------------------------------------------------------- read the spec
# Values are kept base64-encoded (space-separated lists are safe: base64 has no
# spaces) until "end" has arrived; decoding happens once the spec is complete.

# As PID 1 the shell would ignore SIGTERM/SIGINT/SIGHUP (the kernel drops signals init has no
# handler for), and `docker stop` of an idle pool container would wait for its SIGKILL. Exit
# promptly instead. exec resets these handlers, so the command gets default dispositions.
trap '_pd_say "stopped by SIGTERM while waiting for the launch spec"; exit 143' TERM
trap '_pd_say "stopped by SIGINT while waiting for the launch spec"; exit 130' INT
trap '_pd_say "stopped by SIGHUP while waiting for the launch spec"; exit 129' HUP

# _pd_seed_home DIR: copy the image's home skeleton into DIR (see "Home skeleton" above).
_pd_seeded=
_pd_seed_home() {
    _pd_skel=${POLYDEV_HOME_SKEL:-/usr/local/share/polydev/home-skel}
    _pd_seeded=$1
    [ -d "$_pd_skel" ] || return 0
    (umask 077 && cp -R -- "$_pd_skel/." "$1/") 2>/dev/null ||
        _pd_say "could not copy the home skeleton $_pd_skel into $1 (is it writable?); the CLI starts without it"
}
if [ "${WARM_POOL:-}" = true ]; then
    case ${HOME:-} in /*) _pd_seed_home "$HOME" ;; esac
fi

_pd_timeout=${POLYDEV_SPEC_TIMEOUT:-60}
case $_pd_timeout in
'' | *[!0-9]* | 0) _pd_say "ignoring invalid POLYDEV_SPEC_TIMEOUT (want a positive integer); using 60"
    _pd_timeout=60 ;;
esac

# First line: without a warm pool, give up after $_pd_timeout seconds.
# bash reports a timeout with a status > 128, busybox ash with 1 (like EOF), so
# also look at the clock to tell a timeout from an early EOF.
_pd_line=
if [ "${WARM_POOL:-}" = true ]; then
    IFS= read -r _pd_line
    _pd_rc=$?
else
    _pd_t0=$(date +%s)
    # shellcheck disable=SC3045 # read -t: not POSIX, but bash and busybox ash have it
    IFS= read -r -t "$_pd_timeout" _pd_line
    _pd_rc=$?
    if [ "$_pd_rc" -ne 0 ] && [ -z "$_pd_line" ]; then
        _pd_t1=$(date +%s)
        if [ "$_pd_rc" -gt 128 ] || [ $((_pd_t1 - _pd_t0)) -ge "$_pd_timeout" ]; then
            _pd_die 66 "no launch spec arrived: timed out after ${_pd_timeout}s waiting for the first line (set WARM_POOL=true to wait forever)"
        fi
    fi
fi
if [ "$_pd_rc" -ne 0 ] && [ -z "$_pd_line" ]; then
    _pd_die 66 "no launch spec arrived: stdin reached EOF before anything was read"
fi
case $_pd_line in
polydev-launch-v1 | polydev-launch-v2) ;;
*) _pd_malformed "the first line is not polydev-launch-v2 (nor v1)" ;;
esac

_pd_args=
_pd_envs=
_pd_cwd=
_pd_have_cwd=
_pd_reqs=
_pd_files=
_pd_lineno=1
_pd_ended=
while :; do
    _pd_line=
    IFS= read -r _pd_line
    _pd_rc=$?
    # A final line without its "\n" is still accepted; EOF with nothing read is not.
    if [ "$_pd_rc" -ne 0 ] && [ -z "$_pd_line" ]; then break; fi
    _pd_lineno=$((_pd_lineno + 1))
    if [ "$_pd_line" = end ]; then _pd_ended=1; break; fi
    # "<keyword> <base64>"; a bare keyword counts as an empty value. Any extra space
    # lands in the value and fails the base64 check.
    case $_pd_line in
    *' '*) _pd_kw=${_pd_line%% *}; _pd_val=${_pd_line#* } ;;
    *) _pd_kw=$_pd_line; _pd_val= ;;
    esac
    case $_pd_kw in
    arg | env | cwd | require) ;;
    file)
        # "file <path> <content>": two base64 values, kept as "path:content" (':' is not
        # base64, so the pair splits back unambiguously).
        case $_pd_val in
        *' '*) _pd_fp=${_pd_val%% *}; _pd_fc=${_pd_val#* } ;;
        *) _pd_malformed "line $_pd_lineno (file): want a path and a content" ;;
        esac
        _pd_valid_b64 "$_pd_fp" && _pd_valid_b64 "$_pd_fc" ||
            _pd_malformed "line $_pd_lineno (file): value is not valid base64"
        [ -n "$_pd_fp" ] || _pd_malformed "line $_pd_lineno (file): empty path"
        _pd_files="$_pd_files $_pd_fp:${_pd_fc:--}"
        continue
        ;;
    *) _pd_malformed "unknown keyword on line $_pd_lineno (want arg, env, cwd, require, file or end)" ;;
    esac
    _pd_valid_b64 "$_pd_val" || _pd_malformed "line $_pd_lineno ($_pd_kw): value is not valid base64"
    case $_pd_kw in
    arg) _pd_args="$_pd_args ${_pd_val:--}" ;; # "-" stands for an empty argument
    env)
        [ -n "$_pd_val" ] || _pd_malformed "line $_pd_lineno (env): empty entry, want NAME=VALUE"
        _pd_envs="$_pd_envs $_pd_val"
        ;;
    cwd)
        [ -z "$_pd_have_cwd" ] || _pd_malformed "line $_pd_lineno: more than one cwd line"
        _pd_have_cwd=1
        _pd_cwd=$_pd_val
        ;;
    require)
        [ -n "$_pd_val" ] || _pd_malformed "line $_pd_lineno (require): empty variable name"
        _pd_reqs="$_pd_reqs $_pd_val"
        ;;
    esac
done
if [ -z "$_pd_ended" ]; then
    _pd_die 66 "no launch spec arrived: stdin reached EOF before the 'end' line"
fi
# The spec is complete at "end": nothing more is read, and the command's stdin is /dev/null
# (Nomad gives tasks no stdin). Waiting for the driver's close of stdin instead would hang
# forever in a container the engine live-restored: the engine then delivers the spec but
# never the end of its stdin.
exec 0</dev/null
[ -n "$_pd_args" ] || _pd_malformed "no arg line (the command is required)"

# ---------------------------------------------------------------- decode
# Positional parameters become: NAME=VALUE... (the spec's env, in order), then
# argv. $_pd_nenv counts the env entries.
set --
_pd_nenv=0
_pd_envnames=
_pd_debug=${DEBUG:-}
_pd_path=${PATH:-}
_pd_home=${HOME:-}
for _pd_b in $_pd_envs; do
    _pd_decode "$_pd_b" || _pd_malformed "an env value could not be decoded"
    case $_pd_out in *=*) ;; *) _pd_malformed "an env entry is not NAME=VALUE" ;; esac
    _pd_name=${_pd_out%%=*}
    _pd_valid_name "$_pd_name" || _pd_malformed "an env entry has an invalid variable name"
    case $_pd_name in
    DEBUG) _pd_debug=${_pd_out#*=} ;;
    PATH) _pd_path=${_pd_out#*=} ;;
    HOME) _pd_home=${_pd_out#*=} ;;
    esac
    _pd_envnames="$_pd_envnames $_pd_name"
    set -- "$@" "$_pd_out"
    _pd_nenv=$((_pd_nenv + 1))
done
_pd_argc=0
for _pd_b in $_pd_args; do
    _pd_decode "$_pd_b" || _pd_malformed "an arg could not be decoded"
    set -- "$@" "$_pd_out"
    _pd_argc=$((_pd_argc + 1))
done
if [ -n "$_pd_have_cwd" ]; then
    _pd_decode "$_pd_cwd" || _pd_malformed "the cwd could not be decoded"
    _pd_cwd=$_pd_out
    case $_pd_cwd in /*) ;; *) _pd_malformed "cwd is not an absolute path" ;; esac
fi
_pd_reqnames=
for _pd_b in $_pd_reqs; do
    _pd_decode "$_pd_b" || _pd_malformed "a require name could not be decoded"
    _pd_valid_name "$_pd_out" || _pd_malformed "a require line has an invalid variable name"
    _pd_reqnames="$_pd_reqnames $_pd_out"
done

# _pd_valid_relpath PATH: components of [A-Za-z0-9._-], none "." or "..", no leading "/".
_pd_valid_relpath() {
    case $1 in '' | /* | */ | *//* | *[!A-Za-z0-9._/-]*) return 1 ;; esac
    case /$1/ in */./* | */../*) return 1 ;; esac
    return 0
}
for _pd_f in $_pd_files; do
    _pd_decode "${_pd_f%%:*}" || _pd_malformed "a file path could not be decoded"
    _pd_valid_relpath "$_pd_out" || _pd_malformed "a file path is not a plain path relative to \$HOME"
done
[ -z "$_pd_files" ] || case $_pd_home in /*) ;; *) _pd_malformed "file lines need an absolute HOME" ;; esac

# Cold start, or a spec that moved HOME: seed the home the command will see.
case $_pd_home in
/*) [ "$_pd_seeded" = "$_pd_home" ] || _pd_seed_home "$_pd_home" ;;
esac

_pd_say launch
# ------------------------------------------------- everything below reaches the user's logs

# Files first (they are settings the command reads, never secrets), as the task's user.
for _pd_f in $_pd_files; do
    _pd_decode "${_pd_f%%:*}"
    _pd_fpath=$_pd_home/$_pd_out
    _pd_decode "${_pd_f#*:}" || _pd_malformed "a file's content could not be decoded"
    _pd_fdir=${_pd_fpath%/*}
    if ! (umask 077 && mkdir -p -- "$_pd_fdir") 2>/dev/null; then
        _pd_die 65 "cannot create the directory $_pd_fdir for a file of the launch spec"
    fi
    (umask 077 && printf '%s' "$_pd_out" >"$_pd_fpath") 2>/dev/null ||
        _pd_die 65 "cannot write $_pd_fpath (is the home directory writable?)"
done

if [ -n "$_pd_have_cwd" ]; then
    cd -- "$_pd_cwd" 2>/dev/null || _pd_die 65 "cannot change to the working directory $_pd_cwd"
fi

# _pd_is_set NAME ENTRY...: the effective value of NAME is non-empty. The
# spec's last NAME=... entry wins; otherwise the container's environment.
_pd_is_set() {
    _pd_want=$1
    shift
    _pd_found=
    _pd_i=0
    for _pd_e do
        [ "$_pd_i" -lt "$_pd_nenv" ] || break
        _pd_i=$((_pd_i + 1))
        case $_pd_e in "$_pd_want="*) _pd_found=${_pd_e#*=}; _pd_found=${_pd_found:+y}; _pd_found=${_pd_found:-n} ;; esac
    done
    case $_pd_found in
    y) return 0 ;;
    n) return 1 ;;
    esac
    eval "[ -n \"\${$_pd_want:-}\" ]"
}

for _pd_n in $_pd_reqnames; do
    if ! _pd_is_set "$_pd_n" "$@"; then
        _pd_die 78 "missing credential $_pd_n for provider ${POLYDEV_PROVIDER:-unknown}:" \
            "it is not set (or empty) in the launch spec or the container." \
            "Register a $_pd_n credential for this user and namespace with the polydev driver" \
            "(its credential source); the driver injects it at launch."
    fi
done

# Drop the env entries from a copy of the positional parameters to find argv[0].
_pd_i=0
for _pd_e do
    if [ "$_pd_i" -eq "$_pd_nenv" ]; then _pd_cmd=$_pd_e; break; fi
    _pd_i=$((_pd_i + 1))
done

if [ "$_pd_debug" = true ]; then
    _pd_say "debug: argc=$_pd_argc cwd=$(pwd)"
    _pd_i=0
    _pd_a=0
    for _pd_e do
        if [ "$_pd_i" -ge "$_pd_nenv" ]; then
            _pd_say "debug: argv[$_pd_a]=$_pd_e"
            _pd_a=$((_pd_a + 1))
        fi
        _pd_i=$((_pd_i + 1))
    done
    _pd_say "debug: env names set by the spec:${_pd_envnames:- (none)}"
    _pd_say "debug: required credentials present:${_pd_reqnames:- (none)}"
fi

_pd_resolve "$_pd_cmd" "$_pd_path"
# Apply the spec's variables with `export`, a builtin: no value ever passes through a
# process's argv. Then exec the command in this same process, so it is PID 1.
# The count of entries left rides in $1, and each export is the last thing its
# iteration does: an entry named like one of this script's variables, or IFS,
# changes nothing the loop still reads (only quoted expansions follow).
set -- "$_pd_nenv" "$@"
while [ "$1" -gt 0 ]; do
    _pd_left=$(($1 - 1))
    _pd_entry=$2
    shift 2
    set -- "$_pd_left" "$@"
    export "$_pd_entry" 2>/dev/null ||
        _pd_die 65 "cannot set environment variable ${_pd_entry%%=*} (the shell keeps it read-only)"
done
shift
exec -- "$@"
