import CDTensor

/// Every tensor of a safetensors file as floats, by name.
func tensors(_ path: String) throws -> [String: [Float]] {
    let file = try SafetensorsFile(path: path)
    var out: [String: [Float]] = [:]
    for name in file.names { out[name] = try file.tensor(name).array }
    return out
}
