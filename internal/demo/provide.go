package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/docker/docker/client"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
)

// Public names of the demo images' records.
const (
	NotebookRecord = "demo_notebook"
	DesktopRecord  = "demo_desktop"
)

// NotebookLogRegex finds the notebook's token in its log, as for Jupyter.
const NotebookLogRegex = `token=([0-9a-f]+)`

// DesktopLogRegex matches the line the desktop prints once it listens: with it as
// the record's log_regex, a launch returns when the desktop answers (the port is
// published before, by the engine's proxy, which takes and drops connections).
const DesktopLogRegex = `VNC server on `

// auditActor names Provide in the store's audit log.
const auditActor = "demo"

const (
	pingTimeout  = 5 * time.Second
	storeTimeout = 10 * time.Second
)

// Record is the image record of kind's image ref: a Docker workload of 1 CPU, 1G of
// memory and 1G of disk, whose log_regex waits until it is ready.
func Record(kind Kind, ref string) calipso.Image {
	im := calipso.Image{Image: ref, CPU: 1, Memory: "1G", HDD: "1G", ResourceType: "docker"}
	switch kind {
	case KindDesktop:
		im.PublicName, im.Protocol, im.LogRegex = DesktopRecord, "vnc", DesktopLogRegex
	default:
		im.PublicName, im.Protocol, im.LogRegex = NotebookRecord, "http", NotebookLogRegex
	}
	return im
}

// ImageStore is the part of the application store Provide writes records with.
type ImageStore interface {
	Image(ctx context.Context, publicName string) (calipso.Image, error)
	PutImage(ctx context.Context, actor string, im calipso.Image) (created bool, err error)
}

// Config says which engine and executable Provide uses.
type Config struct {
	// DockerHost is the engine URL (settings docker.url); empty uses DOCKER_HOST or
	// the default socket, as the Docker provisioner does.
	DockerHost string
	// Executable is packed into the images; empty is the running one.
	Executable string
	Logger     *slog.Logger
}

// Provide makes the demo images on the Docker engine when it lacks them (built from
// the executable, so no registry is needed) and the image records demo_notebook and
// demo_desktop that launch them. A record is created when absent; an existing one
// is left as an admin made it, except that one still naming an earlier demo image
// is moved to the current one (a rebuilt calipso has new images).
func Provide(ctx context.Context, cfg Config, images ImageStore) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	exe, err := Inspect(cfg.Executable)
	if err != nil {
		return err
	}
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if cfg.DockerHost != "" {
		opts = append(opts, client.WithHost(cfg.DockerHost))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return fmt.Errorf("demo images: docker client: %w", err)
	}
	defer cli.Close()
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	_, err = cli.Ping(pctx)
	cancel()
	if err != nil {
		return fmt.Errorf("demo images: no Docker engine answers: %w", err)
	}

	for _, kind := range Kinds {
		start := time.Now()
		ref, built, err := exe.EnsureImage(ctx, cli, kind)
		if err != nil {
			return err
		}
		if built {
			log.InfoContext(ctx, "demo image built from this executable", "image", ref, "took", time.Since(start).Round(time.Millisecond))
		}
		action, err := EnsureRecord(ctx, images, Record(kind, ref))
		if err != nil {
			return err
		}
		log.InfoContext(ctx, "demo image ready", "record", Record(kind, ref).PublicName, "image", ref, "record_action", action)
	}
	return nil
}

// What EnsureRecord did.
const (
	RecordCreated = "created"
	RecordUpdated = "moved to the current image"
	RecordKept    = "kept"
)

// EnsureRecord creates want when no record has its public name. An existing record
// is kept, unless it names another image of want's demo repository: then only its
// image is changed, keeping whatever an admin changed in the rest.
func EnsureRecord(ctx context.Context, images ImageStore, want calipso.Image) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	cur, err := images.Image(ctx, want.PublicName)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if _, err := images.PutImage(ctx, auditActor, want); err != nil {
			return "", fmt.Errorf("demo images: create record %s: %w", want.PublicName, err)
		}
		return RecordCreated, nil
	case err != nil:
		return "", fmt.Errorf("demo images: record %s: %w", want.PublicName, err)
	}
	repo, _, _ := strings.Cut(want.Image, ":")
	if cur.Image == want.Image || !strings.HasPrefix(cur.Image, repo+":") {
		return RecordKept, nil
	}
	cur.Image = want.Image
	if _, err := images.PutImage(ctx, auditActor, cur); err != nil {
		return "", fmt.Errorf("demo images: update record %s: %w", want.PublicName, err)
	}
	return RecordUpdated, nil
}

// Start runs Provide in the background (the first build sends the executable to the
// engine), logging why the demo images could not be made. wait returns once it has
// ended; cancel ctx first to cut it short.
func Start(ctx context.Context, cfg Config, images ImageStore) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := Provide(ctx, cfg, images); err != nil && ctx.Err() == nil && cfg.Logger != nil {
			cfg.Logger.Warn("demo images not made: demo_notebook and demo_desktop cannot be launched", "err", err)
		}
	}()
	return func() { <-done }
}
