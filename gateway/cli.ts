#!/usr/bin/env -S node --max-semi-space-size=8 --heap-growing-percent=20
// The bin. `receipt-gateway start` holds SIGHUP and SIGUSR2 from its first moment: they would end
// a gateway still starting (their default action), and loading the gateway's modules alone takes
// a good part of the start. So this module imports early-signals.ts, which installs the handlers,
// and only then loads the commands (cli-main.ts).
import './early-signals.js';

await import('./cli-main.js');
