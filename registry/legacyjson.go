package registry

// The per-layer JSON `docker save` writes (layers/<id>/json), after docker's
// image/tarexport saveImage and image/v1: each layer gets a V1Image; every
// layer but the top one is empty except for "created" (the Unix epoch),
// "container_config" (an empty container config, which Go's encoder always
// writes) and "os"; the top one carries the image config's V1Image fields.
// Fields are written in docker's struct order, so the output is
// deterministic for a given config.
//
// One difference on purpose: docker names layers by a digest of this JSON
// (CreateID); regfs names them by the hex of their OCI ChainID, so "id" and
// "parent" here are ChainIDs, consistent with the layers/ directory names.

import (
	"encoding/json"
	"fmt"
	"time"
)

// strSlice is docker's strslice.StrSlice: a JSON string or list of strings,
// always written as a list.
type strSlice []string

func (s *strSlice) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || string(b) == "null" {
		*s = nil
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err == nil {
		*s = list
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err != nil {
		return err
	}
	*s = strSlice{one}
	return nil
}

// dockerHealthConfig is docker's container.HealthConfig.
type dockerHealthConfig struct {
	Test          []string      `json:",omitempty"`
	Interval      time.Duration `json:",omitempty"`
	Timeout       time.Duration `json:",omitempty"`
	StartPeriod   time.Duration `json:",omitempty"`
	StartInterval time.Duration `json:",omitempty"`
	Retries       int           `json:",omitempty"`
}

// dockerContainerConfig is docker's container.Config, fields in its order.
type dockerContainerConfig struct {
	Hostname        string
	Domainname      string
	User            string
	AttachStdin     bool
	AttachStdout    bool
	AttachStderr    bool
	ExposedPorts    map[string]struct{} `json:",omitempty"`
	Tty             bool
	OpenStdin       bool
	StdinOnce       bool
	Env             []string
	Cmd             strSlice
	Healthcheck     *dockerHealthConfig `json:",omitempty"`
	ArgsEscaped     bool                `json:",omitempty"`
	Image           string
	Volumes         map[string]struct{}
	WorkingDir      string
	Entrypoint      strSlice
	NetworkDisabled bool   `json:",omitempty"`
	MacAddress      string `json:",omitempty"`
	OnBuild         []string
	Labels          map[string]string
	StopSignal      string   `json:",omitempty"`
	StopTimeout     *int     `json:",omitempty"`
	Shell           strSlice `json:",omitempty"`
}

// dockerV1Image is docker's image.V1Image, fields in its order.
type dockerV1Image struct {
	ID              string                 `json:"id,omitempty"`
	Parent          string                 `json:"parent,omitempty"`
	Comment         string                 `json:"comment,omitempty"`
	Created         *time.Time             `json:"created"`
	Container       string                 `json:"container,omitempty"`
	ContainerConfig dockerContainerConfig  `json:"container_config,omitempty"`
	DockerVersion   string                 `json:"docker_version,omitempty"`
	Author          string                 `json:"author,omitempty"`
	Config          *dockerContainerConfig `json:"config,omitempty"`
	Architecture    string                 `json:"architecture,omitempty"`
	Variant         string                 `json:"variant,omitempty"`
	OS              string                 `json:"os,omitempty"`
	Size            int64                  `json:",omitempty"`
}

// legacyLayerJSON returns, for each layer (base first, IDs set), the JSON
// docker save writes for it, given the image config. A config whose fields
// docker could not read either (odd types) gets a top layer with only
// created, architecture, variant and os.
func legacyLayerJSON(config []byte, layers []Layer) ([][]byte, error) {
	var top dockerV1Image
	if err := json.Unmarshal(config, &top); err != nil {
		var basic struct {
			Created      json.RawMessage `json:"created"`
			Architecture string          `json:"architecture"`
			Variant      string          `json:"variant"`
			OS           string          `json:"os"`
		}
		_ = json.Unmarshal(config, &basic) // best effort: zero fields if not even this parses
		top = dockerV1Image{Architecture: basic.Architecture, Variant: basic.Variant, OS: basic.OS}
		if t := parseCreated(basic.Created); !t.IsZero() {
			top.Created = &t
		}
	}
	epoch := time.Unix(0, 0).UTC()
	out := make([][]byte, len(layers))
	for i, l := range layers {
		img := dockerV1Image{Created: &epoch}
		if i == len(layers)-1 {
			img = top
		}
		img.ID = l.ID
		img.Parent = ""
		if i > 0 {
			img.Parent = layers[i-1].ID
		}
		img.OS = top.OS
		b, err := json.Marshal(img)
		if err != nil {
			return nil, fmt.Errorf("layer %d JSON: %w", i, err)
		}
		out[i] = b
	}
	return out, nil
}
