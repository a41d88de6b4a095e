package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmesh/vmesh/mesh"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := mesh.Main(ctx, os.Args)
	stop()
	os.Exit(code)
}
