// Package systemd will hold sd_notify (READY, WATCHDOG, STOPPING,
// RELOADING), the vmesh.service unit and `vmesh install`. Not built yet.
package systemd
