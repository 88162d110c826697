// Command etcd is a thin wrapper so the etcd server can be built with `go build`
// (the upstream server module has replace directives that break `go install`).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
