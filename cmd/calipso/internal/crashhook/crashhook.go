// Package crashhook makes a calipso server kill itself at a chosen point of a launch,
// so that the crash tests can check what a restart finds and repairs. Only the
// crash tests' build (-tags crashtest, cmd/calipso/crashhook.go) links it: the
// production binary does not contain it, and CALIPSO_CRASH_AT does nothing there.
package crashhook

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"syscall"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/launch"
	"github.com/calipsoplus/calipso/provisioner"
)

// Env names the hook: CALIPSO_CRASH_AT=reserved|created|started kills the server
// (SIGKILL, no clean-up of any kind) at that point of a launch.
const Env = "CALIPSO_CRASH_AT"

// Install arms the hook that getenv(Env) names, if any:
//
//   - reserved: after the quota is held and the record is pending, before the engine
//     is asked (launch.StageReserved);
//   - created: the Docker engine's Start is replaced by a bare ContainerCreate of the
//     workload's name and labels, then the kill. It simulates dying between the
//     provisioner's create and start calls: a created, never-started container of this
//     installation, with the record pending;
//   - started: after the engine's Start returned a running workload, before the record
//     says running or the Guacamole record is written (launch.StageStarted);
//   - stop: when a stop asks the Docker engine to stop a workload (the record is
//     stopping under this process's lease, the workload still runs): the lifecycle
//     policies' reclaim, or a user's stop, cut in the middle.
//
// engines is the map svc launches with (it reads it at each launch), dockerURL the
// settings' docker.url.
func Install(getenv func(string) string, log *slog.Logger, svc *launch.Service, engines map[calipso.ResourceType]provisioner.Provisioner, dockerURL string) error {
	at := getenv(Env)
	if at == "" {
		return nil
	}
	log.Warn("crash test hook armed: the server kills itself during a launch", "at", at)
	switch at {
	case string(launch.StageReserved), string(launch.StageStarted):
		svc.SetHook(func(_ context.Context, stage launch.Stage, _ calipso.Resource) {
			if string(stage) == at {
				crash()
			}
		})
	case "stop":
		engine, ok := engines[calipso.Docker]
		if !ok {
			return fmt.Errorf("%s=stop needs the Docker engine", Env)
		}
		engines[calipso.Docker] = crashOnStop{Provisioner: engine}
	case "created":
		engine, ok := engines[calipso.Docker]
		if !ok {
			return fmt.Errorf("%s=created needs the Docker engine", Env)
		}
		opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
		if dockerURL != "" {
			opts = append(opts, client.WithHost(dockerURL))
		}
		cli, err := client.NewClientWithOpts(opts...)
		if err != nil {
			return fmt.Errorf("%s: docker client: %w", Env, err)
		}
		engines[calipso.Docker] = createThenCrash{Provisioner: engine, cli: cli}
	default:
		return fmt.Errorf("%s=%q: want reserved, created, started or stop", Env, at)
	}
	return nil
}

// createThenCrash creates the workload's container without starting it, then dies.
type createThenCrash struct {
	provisioner.Provisioner
	cli *client.Client
}

func (c createThenCrash) Start(ctx context.Context, spec provisioner.Spec) (provisioner.Workload, error) {
	_, err := c.cli.ContainerCreate(ctx, &container.Config{Image: spec.Image, Labels: spec.Labels(),
		User: fmt.Sprintf("%d:%d", spec.UID, spec.GID)}, &container.HostConfig{}, nil, nil, spec.Name())
	if err != nil {
		return provisioner.Workload{}, fmt.Errorf("crash hook: create %s: %w", spec.Name(), err)
	}
	crash()
	return provisioner.Workload{}, nil // not reached
}

// crashOnStop dies when asked to stop a workload, before the engine hears of it.
type crashOnStop struct{ provisioner.Provisioner }

func (crashOnStop) Stop(context.Context, string) error {
	crash()
	return nil // not reached
}

// crash ends the process the way a power cut or the OOM killer would.
func crash() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}
