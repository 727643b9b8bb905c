// sdnotify: the systemd readiness protocol (sd_notify(3)) without libsystemd: one datagram with
// "KEY=VALUE\n" lines to the unix socket named by $NOTIFY_SOCKET (an '@' first means the abstract
// namespace). Without NOTIFY_SOCKET (not started by systemd with Type=notify) it does nothing.
#pragma once

// Sends state ("READY=1", "STOPPING=1", "RELOADING=1\nMONOTONIC_USEC=...", "WATCHDOG=1", ...).
// Returns true when sent, false when there is no NOTIFY_SOCKET or the send failed (never blocks:
// the datagram socket is non-blocking and a full socket drops the message, as libsystemd does).
bool sdnotify(const char* state);

// The watchdog interval in microseconds systemd asked for ($WATCHDOG_USEC, for this process by
// $WATCHDOG_PID when set), or 0 when none.
unsigned long long sdnotify_watchdog_usec();
