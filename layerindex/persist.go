package layerindex

func (m *Manager) loadIndex(key string) (*layerIndex, error) { return nil, nil }

func (m *Manager) saveIndex(key string, idx *layerIndex) {}
