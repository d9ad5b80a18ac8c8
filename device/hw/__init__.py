"""Hardware: camera, GPIO, inputs, indicators, GNSS, serial, board telemetry, systemd notify/watchdog."""
