# bash completion for bindonce(1)                                  -*- shell-script -*-
# SPDX-License-Identifier: MIT
#
# Installed as bash-completion/completions/bindonce (make install, the Debian package);
# bash-completion loads it the first time `bindonce <TAB>` is pressed. By hand:
#   source completion/bindonce.bash
#
# Completes bindonce's options and their fixed values, `ctl` and `generate-units` with
# theirs, the names of running instances for `ctl --name` (from the control directory
# `bindonce ctl` itself uses), signal names for `ctl signal`, and the worker command after
# `--` (or after the first word that is not an option) as if it were typed alone.

# Whether option $1 takes a value (the next word).
_bindonce_takes_value() {
    case $1 in
    -l|--listen|--listen-datagram|--listen-seqpacket|--fdname|--backlog|-w|--workers|\
    -E|--setenv|--restart|--stop-timeout|--give-up|--name|--ready|--start-timeout|\
    --notify-access|--max-surge|--max-unavailable|--watchdog|--min-ready|--control|\
    --balance|--unit-dir|--stop-signal|--user|--group|--chdir|--umask|--socket-mode|\
    --socket-user|--socket-group|--bind-to-device|--watch|--watch-ignore|--watch-delay) return 0 ;;
    esac
    return 1
}

_bindonce_options="-l --listen --listen-datagram --listen-seqpacket -d --datagram --seqpacket
    --fdname --backlog --reuse-port --balance --fd-store -w --workers -E --setenv --restart
    --stop-timeout --give-up --name --ready --start-timeout --notify-access --max-surge
    --max-unavailable --watchdog --min-ready --control --nonblocking --socket-mode
    --socket-user --socket-group --ipv6-only --freebind --bind-to-device --stop-signal
    --user --group --chdir --umask --log-prefix --watch --watch-ignore --watch-delay
    --watch-restart -h --help --version"

_bindonce_ctl_commands="status reload restart scale signal stop events upgrade"

# What parse_signal() in src/control.c accepts by name (sigabbrev_np), without "SIG".
_bindonce_signals="HUP INT QUIT ILL TRAP ABRT BUS FPE KILL USR1 SEGV USR2 PIPE ALRM TERM
    STKFLT CHLD CONT STOP TSTP TTIN TTOU URG XCPU XFSZ VTALRM PROF WINCH IO PWR SYS"

# The control directory, chosen as control_default_path() in src/control.c chooses it.
_bindonce_control_dir() {
    if [[ -n ${RUNTIME_DIRECTORY-} ]]; then
        printf '%s\n' "${RUNTIME_DIRECTORY%%:*}"
    elif [[ ${EUID} -eq 0 ]]; then
        printf '%s\n' /run/bindonce
    elif [[ -n ${XDG_RUNTIME_DIR-} ]]; then
        printf '%s\n' "${XDG_RUNTIME_DIR}/bindonce"
    fi
}

# The instance names: NAME of every NAME.sock in the control directory.
_bindonce_instances() {
    local dir sock
    dir=$(_bindonce_control_dir)
    [[ -n $dir && -d $dir ]] || return 0
    for sock in "$dir"/*.sock; do
        [[ -S $sock ]] || continue
        sock=${sock##*/}
        printf '%s\n' "${sock%.sock}"
    done
}

_bindonce_reply() {     # words, current word
    local IFS=$' \t\n'
    COMPREPLY=($(compgen -W "$1" -- "$2"))
}

_bindonce_files() {     # current word; -d for directories only
    if declare -F _filedir >/dev/null; then
        _filedir $2
    else
        local IFS=$'\n'
        COMPREPLY=($(compgen ${2:--f} -- "$1"))
    fi
}

# The value of option $1; returns 1 when it has nothing to offer.
_bindonce_value() {
    local opt=$1 cur=$2
    case $opt in
    --restart)       _bindonce_reply "always on-failure no" "$cur" ;;
    --ready)         _bindonce_reply "exec notify" "$cur" ;;
    --notify-access) _bindonce_reply "main all" "$cur" ;;
    --balance)       _bindonce_reply "shared reuseport" "$cur" ;;
    --control|--watch) _bindonce_files "$cur" ;;
    --unit-dir|--chdir) _bindonce_files "$cur" -d ;;
    --user|--socket-user)   local IFS=$'\n'; COMPREPLY=($(compgen -u -- "$cur")) ;;
    --group|--socket-group) local IFS=$'\n'; COMPREPLY=($(compgen -g -- "$cur")) ;;
    --stop-signal)   _bindonce_reply "$_bindonce_signals" "$cur" ;;
    --bind-to-device) _bindonce_reply "$(ls /sys/class/net 2>/dev/null)" "$cur" ;;
    -E|--setenv)     local IFS=$'\n'; COMPREPLY=($(compgen -e -- "$cur")) ;;
    *)               COMPREPLY=() ;;    # addresses, numbers, seconds, names: free text
    esac
}

_bindonce_ctl() {       # index of "ctl" in words
    local i=$(($1 + 1)) word command="" nargs=0
    for ((; i < cword; i++)); do
        word=${words[i]}
        if [[ -z $command ]]; then
            case $word in
            --name|--control) ((i++)) ;;
            -*) ;;
            *) command=$word ;;
            esac
        else
            ((nargs++))
        fi
    done

    if [[ -z $command ]]; then
        case $prev in
        --name)    local IFS=$'\n'; COMPREPLY=($(compgen -W "$(_bindonce_instances)" -- "$cur")); return ;;
        --control) _bindonce_files "$cur"; return ;;
        esac
        if [[ $cur == -* ]]; then
            _bindonce_reply "--name --control --json --help" "$cur"
        else
            _bindonce_reply "$_bindonce_ctl_commands" "$cur"
        fi
        return
    fi
    case $command:$nargs in
    status:0|events:0) _bindonce_reply "--json" "$cur" ;;
    restart:0) _bindonce_reply "all" "$cur" ;;
    signal:0)
        if [[ $cur == SIG* ]]; then
            _bindonce_reply "$(printf 'SIG%s ' $_bindonce_signals)" "$cur"
        else
            _bindonce_reply "$_bindonce_signals" "$cur"
        fi ;;
    signal:1)  _bindonce_reply "all" "$cur" ;;
    upgrade:0) _bindonce_reply "--exe" "$cur" ;;
    upgrade:1) _bindonce_files "$cur" ;;
    *)         COMPREPLY=() ;;
    esac
}

_bindonce() {
    local cur prev words cword
    if declare -F _init_completion >/dev/null; then
        _init_completion || return
    else
        words=("${COMP_WORDS[@]}") cword=$COMP_CWORD
        cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    fi

    local i=1 generate=""
    if [[ ${words[1]-} == ctl ]] && ((cword > 1)); then
        _bindonce_ctl 1
        return
    fi
    if [[ ${words[1]-} == generate-units ]] && ((cword > 1)); then
        ((cword == 2)) && return    # the NAME of the units: free text
        generate=1 i=3
    fi

    # Past the options: the worker command, completed as a command line of its own.
    for ((; i < cword; i++)); do
        case ${words[i]} in
        --) break ;;
        -*) _bindonce_takes_value "${words[i]}" && ((i++)) ;;
        *) break ;;
        esac
    done
    if ((i < cword)); then
        [[ ${words[i]} == -- ]] && ((i++))
        if declare -F _command_offset >/dev/null; then
            _command_offset $i
        elif ((i == cword)); then
            local IFS=$'\n'; COMPREPLY=($(compgen -c -- "$cur"))
        else
            _bindonce_files "$cur"
        fi
        return
    fi

    if _bindonce_takes_value "$prev" && ((cword > 1)); then
        _bindonce_value "$prev" "$cur"
        return
    fi
    if [[ $cur == -* ]]; then
        if [[ -n $generate ]]; then
            _bindonce_reply "--install --unit-dir $_bindonce_options" "$cur"
        else
            _bindonce_reply "$_bindonce_options" "$cur"
        fi
    elif ((cword == 1)); then
        # The subcommands; a worker command may come first too, once a letter is typed.
        _bindonce_reply "ctl generate-units" "$cur"
        if [[ -n $cur ]]; then
            local IFS=$'\n'; COMPREPLY+=($(compgen -c -- "$cur"))
        fi
    else
        local IFS=$'\n'; COMPREPLY=($(compgen -c -- "$cur"))
    fi
} &&
    complete -F _bindonce bindonce
