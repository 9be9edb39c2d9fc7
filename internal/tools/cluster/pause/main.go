// Command pause is a pod sandbox's process for the Kubernetes end-to-end
// test: it holds the pod's namespaces and does nothing until it is told to
// stop, as Kubernetes' own pause image does; built static, it is the whole
// of a one-file image, so that no image has to be fetched from outside.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
