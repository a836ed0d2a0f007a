// Command kubectl-notifier is a kubectl plugin for dynamic-notifier: `kubectl notifier test`
// shows what a WatchSubscription would send for the objects that exist now, `send` sends a
// test event through its sink, `tail` follows what it delivers, and `status` sums it up.
// It uses the operator's own code for everything that decides what is sent
// (internal/subscription), so what it shows is what the operator does.
//
// Installed as kubectl-notifier on the PATH (or through krew, plugins/krew/notifier.yaml), it runs
// as `kubectl notifier ...`; it honours kubectl's flags (--kubeconfig, --context, -n, ...).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := newRootCommand(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	if err := cmd.ExecuteContext(ctx); err != nil {
		_, _ = fmt.Fprintln(os.Stderr, "error:", err)
		stop()
		os.Exit(1)
	}
}
