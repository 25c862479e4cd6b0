// Command daprd is the Dapr sidecar built for swarmd.
//
// It is upstream daprd (built with -tags stablecomponents) plus the
// lock.redis component, which upstream only registers under the
// allcomponents tag. swarmd's engine and watchdog take distributed locks
// through it, so it must be present in every daprd we run.
package main

import (
	lockredis "github.com/dapr/components-contrib/lock/redis"
	"github.com/dapr/dapr/cmd/daprd/app"
	lockloader "github.com/dapr/dapr/pkg/components/lock"
)

func main() {
	lockloader.DefaultRegistry.RegisterComponent(lockredis.NewStandaloneRedisLock, "redis")
	app.Run()
}
