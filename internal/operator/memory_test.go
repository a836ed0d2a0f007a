package operator

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"testing"
)

// keepRuntimeMemoryLimit restores the process's Go memory limit after a test changed it.
func keepRuntimeMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
}

// cgroupSays has ContainerMemoryLimit read content as the cgroup's memory limit.
func cgroupSays(t *testing.T, content string) {
	path := filepath.Join(t.TempDir(), "memory.max")
	if err := os.WriteFile(path, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	prev := cgroupMemoryFiles
	cgroupMemoryFiles = []string{path}
	t.Cleanup(func() { cgroupMemoryFiles = prev })
}

func TestTheContainerLimitFromTheDownwardAPIComesFirst(t *testing.T) {
	cgroupSays(t, strconv.Itoa(512<<20))
	for _, tc := range []struct {
		env  string
		want int64
	}{
		{env: strconv.Itoa(256 << 20), want: 256 << 20},
		// Not a byte count: the cgroup says, as without the variable.
		{env: "", want: 512 << 20},
		{env: "256Mi", want: 512 << 20},
		{env: "0", want: 512 << 20},
		{env: "-1", want: 512 << 20},
	} {
		t.Setenv(ContainerMemoryLimitEnv, tc.env)
		if got := ContainerMemoryLimit(); got != tc.want {
			t.Errorf("%s=%q: limit %d, want %d", ContainerMemoryLimitEnv, tc.env, got, tc.want)
		}
	}
}

func TestACgroupWithoutALimit(t *testing.T) {
	t.Setenv(ContainerMemoryLimitEnv, "")
	for _, content := range []string{"max", strconv.FormatInt(math.MaxInt64/4*3, 10), ""} {
		cgroupSays(t, content)
		if got := ContainerMemoryLimit(); got != 0 {
			t.Errorf("cgroup %q: limit %d, want 0 (none)", content, got)
		}
	}
}

func TestTheRuntimeGetsNinetyPercentOfTheContainerLimit(t *testing.T) {
	keepRuntimeMemoryLimit(t)
	debug.SetMemoryLimit(math.MaxInt64)
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv(ContainerMemoryLimitEnv, strconv.Itoa(256<<20))
	want := int64(256<<20) / 10 * 9
	if got := UseContainerMemoryLimit(); got != want {
		t.Errorf("limit in force %d, want %d (90%% of 256 MiB)", got, want)
	}
	if got := debug.SetMemoryLimit(-1); got != want {
		t.Errorf("the runtime's limit is %d, want %d", got, want)
	}
}

func TestAGOMEMLIMITOfTheUserStays(t *testing.T) {
	keepRuntimeMemoryLimit(t)
	// The runtime reads GOMEMLIMIT when the process starts; this stands for it.
	debug.SetMemoryLimit(100 << 20)
	t.Setenv("GOMEMLIMIT", "100MiB")
	t.Setenv(ContainerMemoryLimitEnv, strconv.Itoa(256<<20))
	if got := UseContainerMemoryLimit(); got != 100<<20 {
		t.Errorf("limit in force %d, want the user's %d", got, 100<<20)
	}
}

func TestNoLimitNoRuntimeLimit(t *testing.T) {
	keepRuntimeMemoryLimit(t)
	debug.SetMemoryLimit(math.MaxInt64)
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv(ContainerMemoryLimitEnv, "")
	cgroupSays(t, "max")
	if got := UseContainerMemoryLimit(); got != 0 {
		t.Errorf("limit in force %d with no container limit, want 0", got)
	}
}
