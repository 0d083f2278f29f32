#!/bin/sh
# Uninstall Governor from a Mac (run as root; Jamf/Kandji run it as a script):
#   sudo /bin/sh uninstall.sh                    # keeps every user's data
#   sudo /bin/sh uninstall.sh --purge-user-data  # also each ~/Library/…/governor
# Managed settings are removed by removing the configuration profile in the MDM.
set -u

if [ "$(id -u)" -ne 0 ]; then
    echo "uninstall.sh: run as root (sudo)" >&2
    exit 1
fi
purge=0
[ "${1:-}" = "--purge-user-data" ] && purge=1

# Stop agent and tray in every GUI session.
for uid in $(ps -axo uid=,comm= | awk '$2 ~ /loginwindow$/ { print $1 }' | sort -u); do
    for label in ai.governor.tray ai.governor.agent; do
        launchctl bootout "gui/$uid/$label" >/dev/null 2>&1 || true
    done
done

rm -f /Library/LaunchAgents/ai.governor.agent.plist /Library/LaunchAgents/ai.governor.tray.plist
if [ "$(readlink /usr/local/bin/governor 2>/dev/null)" = "/Applications/Governor.app/Contents/MacOS/governor" ]; then
    rm -f /usr/local/bin/governor
fi
rm -rf /Applications/Governor.app
pkgutil --forget ai.governor.agent.pkg >/dev/null 2>&1 || true

if [ "$purge" = 1 ]; then
    for home in /Users/*; do
        for dir in "Library/Application Support/governor" "Library/Logs/governor" "Library/Caches/governor" \
            "Library/Preferences/governor"; do
            if [ -d "$home/$dir" ]; then
                rm -rf "${home:?}/$dir"
                echo "governor: removed $home/$dir"
            fi
        done
    done
fi
echo "governor: uninstalled"
exit 0
