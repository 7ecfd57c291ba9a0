package static_test

import (
	"testing"

	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/provisioner/provisionertest"
	"github.com/calipsoplus/calipso/provisioner/static"
)

func TestContract(t *testing.T) {
	provisionertest.Run(t, func(t *testing.T) provisionertest.Harness {
		return provisionertest.Harness{
			Engine:            static.New(),
			Instance:          "alba",
			Neighbour:         static.New(),
			NeighbourInstance: "other",
			Image:             "https://jupyter.example.org/hub/?x=1",
			FailingStarts: []provisionertest.FailingStart{
				{Name: "not a URL", Edit: func(s *provisioner.Spec) { s.Image = "jupyter/base:latest" }, Want: provisioner.ErrInvalid},
				{Name: "other scheme", Edit: func(s *provisioner.Spec) { s.Image = "javascript:alert(1)" }, Want: provisioner.ErrInvalid},
			},
			Exceptions: provisionertest.Exceptions{
				Untracked: "a link runs elsewhere and keeps no state (see the package comment)",
			},
		}
	})
}
