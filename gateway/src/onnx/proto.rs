//! Just enough of the ONNX protobuf to see what ONNX Runtime's API hides: which graph inputs
//! declare no shape at all (unknown rank), as opposed to a 0-d shape.

/// Names of the graph inputs whose tensor type has no `shape` field.
pub fn shapeless_inputs(model: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    // ModelProto.graph = 7; GraphProto.input = 11; ValueInfoProto.name = 1, .type = 2;
    // TypeProto.tensor_type = 1; TypeProto.Tensor.shape = 2.
    for (field, graph) in fields(model) {
        if field != 7 {
            continue;
        }
        for (field, value_info) in fields(graph) {
            if field != 11 {
                continue;
            }
            let mut name = None;
            let mut shapeless = false;
            for (field, v) in fields(value_info) {
                match field {
                    1 => name = std::str::from_utf8(v).ok(),
                    2 => {
                        for (field, tensor) in fields(v) {
                            if field == 1 {
                                shapeless = !fields(tensor).any(|(f, _)| f == 2);
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let (Some(name), true) = (name, shapeless) {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// The length-delimited fields of one message (others are skipped); stops at malformed data.
fn fields(mut buf: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    std::iter::from_fn(move || {
        loop {
            let key = varint(&mut buf)?;
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => {
                    varint(&mut buf)?;
                }
                1 => buf = buf.get(8..)?,
                5 => buf = buf.get(4..)?,
                2 => {
                    let len = usize::try_from(varint(&mut buf)?).ok()?;
                    let value = buf.get(..len)?;
                    buf = &buf[len..];
                    return Some((field, value));
                }
                _ => return None,
            }
        }
    })
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}
