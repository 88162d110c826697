// Command pause is the sandbox ("pause") container of the test node: it holds
// a pod's namespaces and does nothing until SIGTERM or SIGINT. No image can be
// pulled here, so the node imports this one under containerd's sandbox_image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// As PID 1 of the pod it also reaps orphans, so none lingers as a zombie.
	signal.Ignore(syscall.SIGCHLD)
	<-stop
}
