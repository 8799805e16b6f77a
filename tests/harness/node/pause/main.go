// Command pause is the pod sandbox's process: it holds the pod's namespaces
// open, reaps orphaned children (it is PID 1 of the sandbox) and exits on
// SIGINT/SIGTERM, like Kubernetes' own pause container. Built static here so
// the sandbox image needs nothing from a registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
