package docker_test

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/client"

	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/provisioner/provisionertest"
)

func TestContract(t *testing.T) {
	t.Parallel()
	provisionertest.Run(t, func(t *testing.T) provisionertest.Harness {
		cli := testenv.DockerClient(t)
		mine, theirs := newProvisioner(t, nil), newProvisioner(t, nil)
		return provisionertest.Harness{
			Engine:            mine,
			Instance:          mine.Instance(),
			Neighbour:         theirs,
			NeighbourInstance: theirs.Instance(),
			Image:             testenv.WorkloadImage(t),
			LogRegex:          tokenRegex,
			FailingStarts: []provisionertest.FailingStart{
				{Name: "image not on the engine", Want: provisioner.ErrInvalid, Edit: func(s *provisioner.Spec) {
					s.Image = "calipso-test-no-such-image:" + testenv.RandomHex(4)
				}},
				{Name: "exits before ready", Want: provisioner.ErrNotReady, Edit: func(s *provisioner.Spec) {
					s.Env, s.LogRegex = map[string]string{"EXIT_CODE": "3"}, tokenRegex // leaves an exited container
				}},
			},
			Applied: func(t *testing.T, name string) provisionertest.Applied {
				t.Helper()
				info, err := cli.ContainerInspect(t.Context(), name)
				if err != nil {
					t.Fatalf("inspect %s: %v", name, err)
				}
				applied := provisionertest.Applied{
					CPUs:        float64(info.HostConfig.NanoCPUs) / 1e9,
					MemoryBytes: info.HostConfig.Memory,
					ReadOnly:    map[string]bool{},
				}
				if info.HostConfig.PidsLimit != nil {
					applied.PidsLimit = *info.HostConfig.PidsLimit
				}
				// A disk bound would be the storage driver's size option.
				if size := info.HostConfig.StorageOpt["size"]; size != "" {
					applied.DiskBytes = -1
				}
				uid, gid, _ := strings.Cut(info.Config.User, ":")
				applied.UID, _ = strconv.Atoi(uid)
				applied.GID, _ = strconv.Atoi(gid)
				for _, m := range info.Mounts {
					applied.ReadOnly[m.Destination] = !m.RW
				}
				shown, err := json.Marshal(info)
				if err != nil {
					t.Fatal(err)
				}
				applied.Shown = string(shown)
				applied.Secrets = secretFiles(t, cli, name)
				return applied
			},
		}
	})
}

// secretFiles reads provisioner.SecretsDir out of the container (none: nil).
func secretFiles(t *testing.T, cli *client.Client, name string) map[string]provisionertest.SecretFile {
	t.Helper()
	rc, _, err := cli.CopyFromContainer(t.Context(), name, provisioner.SecretsDir)
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("copy %s out of %s: %v", provisioner.SecretsDir, name, err)
	}
	defer rc.Close()
	files := map[string]provisionertest.SecretFile{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatalf("read %s of %s: %v", provisioner.SecretsDir, name, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		content, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s of %s: %v", hdr.Name, name, err)
		}
		files[path.Base(hdr.Name)] = provisionertest.SecretFile{Content: string(content), UID: hdr.Uid, GID: hdr.Gid, Mode: fs.FileMode(hdr.Mode).Perm()}
	}
}
