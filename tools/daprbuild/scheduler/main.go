// Command scheduler is upstream Dapr scheduler, built from its Go module.
package main

import "github.com/dapr/dapr/cmd/scheduler/app"

func main() { app.Run() }
