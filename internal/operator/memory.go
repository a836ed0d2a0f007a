package operator

import (
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroupMemoryFiles hold the container's memory limit: cgroup v2, then v1.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// ContainerMemoryLimitEnv names the variable that tells the process its container's memory
// limit in bytes: the shipped Deployments set it from the downward API (limits.memory), so
// the limit is known where the cgroup cannot be read.
const ContainerMemoryLimitEnv = "CONTAINER_MEMORY_LIMIT"

// ContainerMemoryLimit is the memory limit of the container the process runs in, from
// ContainerMemoryLimitEnv, else its cgroup; 0 when there is none.
func ContainerMemoryLimit() int64 {
	if n, err := strconv.ParseInt(os.Getenv(ContainerMemoryLimitEnv), 10, 64); err == nil && n > 0 {
		return n
	}
	for _, path := range cgroupMemoryFiles {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(data))
		n, err := strconv.ParseInt(v, 10, 64)
		// v1 reports "no limit" as a huge number, v2 as "max".
		if err != nil || n <= 0 || n >= math.MaxInt64/2 {
			return 0
		}
		return n
	}
	return 0
}

// UseContainerMemoryLimit sets the Go runtime's memory limit to 90% of the container's
// when GOMEMLIMIT does not set one: the garbage collector then works harder near the limit
// instead of letting the heap grow into the OOM killer. The rest is room for what the
// runtime's limit does not count (the binary's pages): with GOMEMLIMIT at the whole limit,
// RSS reached 280 MiB under a 256 MiB GOMEMLIMIT (BENCHMARKS.md, budgetflood). It returns
// the limit in force (0: none).
func UseContainerMemoryLimit() int64 {
	if os.Getenv("GOMEMLIMIT") == "" {
		if limit := ContainerMemoryLimit(); limit > 0 {
			debug.SetMemoryLimit(RuntimeMemoryLimit(limit))
		}
	}
	if limit := debug.SetMemoryLimit(-1); limit < math.MaxInt64 {
		return limit
	}
	return 0
}

// RuntimeMemoryLimit is the Go runtime's memory limit UseContainerMemoryLimit sets in a container
// limited to limit bytes.
func RuntimeMemoryLimit(limit int64) int64 { return limit / 10 * 9 }

// DefaultDeliveryMemoryBudget is the delivery memory budget for a process whose memory
// limit is limit (0: unknown): a quarter of it, since events take about three times their
// JSON size in memory and the rest of the process needs room too; 256 MiB without a limit.
func DefaultDeliveryMemoryBudget(limit int64) int64 {
	if limit <= 0 {
		return 256 << 20
	}
	return limit / 4
}
