// Command placement is upstream Dapr placement, built from its Go module.
package main

import "github.com/dapr/dapr/cmd/placement/app"

func main() { app.Run() }
