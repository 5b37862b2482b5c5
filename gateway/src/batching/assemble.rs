//! Pure batch assembly: stacking requests' inputs along dim 0 and splitting outputs back.

use crate::tensor::{Tensor, TensorData};

/// Rows along dim 0 shared by every input, or `None` when the request cannot be batched
/// (a 0-d input, or inputs that disagree on dim 0).
pub fn rows(inputs: &[Tensor]) -> Option<usize> {
    let first = inputs.first()?.shape.first().copied()?;
    inputs.iter().all(|t| t.shape.first() == Some(&first)).then_some(first)
}

/// True when `a` and `b` can share a run: same inputs, datatypes and non-batch dims.
pub fn compatible(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.name == y.name
                && x.datatype() == y.datatype()
                && x.shape.len() == y.shape.len()
                && x.shape.get(1..) == y.shape.get(1..)
        })
}

/// Stacks each input of every request along dim 0. The requests must be `compatible`.
pub fn concat(requests: &[&[Tensor]]) -> Option<Vec<Tensor>> {
    let first = requests.first()?;
    let total_rows = requests.iter().try_fold(0usize, |acc, r| rows(r).and_then(|n| acc.checked_add(n)))?;
    let mut stacked = Vec::with_capacity(first.len());
    for (i, template) in first.iter().enumerate() {
        let mut shape = template.shape.clone();
        *shape.first_mut()? = total_rows;
        let capacity = total_rows.checked_mul(template.row_len()?)?;
        let mut data = TensorData::with_capacity(template.datatype(), capacity);
        for request in requests {
            if !data.extend_from(&request.get(i)?.data) {
                return None;
            }
        }
        stacked.push(Tensor { name: template.name.clone(), shape, data });
    }
    Some(stacked)
}

/// Splits each output back into per-request tensors of `row_counts[i]` rows. `None` when an
/// output does not carry the batch along dim 0 (then the requests must run one by one).
pub fn split(outputs: Vec<Tensor>, row_counts: &[usize]) -> Option<Vec<Vec<Tensor>>> {
    let total = row_counts.iter().try_fold(0usize, |acc, &r| acc.checked_add(r))?;
    let mut per_request: Vec<Vec<Tensor>> =
        row_counts.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for output in outputs {
        if output.shape.first() != Some(&total) {
            return None;
        }
        let row_len = output.row_len()?;
        let mut offset = 0usize;
        for (slot, &rows) in per_request.iter_mut().zip(row_counts) {
            let mut shape = output.shape.clone();
            *shape.first_mut()? = rows;
            let end = offset.checked_add(rows)?;
            let data = output.data.slice(offset.checked_mul(row_len)?..end.checked_mul(row_len)?)?;
            slot.push(Tensor { name: output.name.clone(), shape, data });
            offset = end;
        }
    }
    Some(per_request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: &[usize], data: Vec<f32>) -> Tensor {
        Tensor { name: name.into(), shape: shape.to_vec(), data: TensorData::F32(data) }
    }

    #[test]
    fn concat_then_split_returns_each_request_its_rows() {
        let a = vec![t("x", &[1, 2], vec![1.0, 2.0])];
        let b = vec![t("x", &[2, 2], vec![3.0, 4.0, 5.0, 6.0])];
        let stacked = concat(&[&a, &b]).unwrap();
        assert_eq!(stacked[0].shape, vec![3, 2]);
        let back = split(stacked, &[1, 2]).unwrap();
        assert_eq!(back[0], a);
        assert_eq!(back[1], b);
    }

    #[test]
    fn different_inner_dims_are_not_compatible() {
        let a = vec![t("x", &[1, 2], vec![1.0, 2.0])];
        let b = vec![t("x", &[1, 3], vec![1.0, 2.0, 3.0])];
        assert!(!compatible(&a, &b));
        assert!(compatible(&a, &a));
    }

    #[test]
    fn rows_needs_a_shared_dim_zero() {
        assert_eq!(rows(&[t("x", &[3, 1], vec![0.0; 3]), t("y", &[3], vec![0.0; 3])]), Some(3));
        assert_eq!(rows(&[t("x", &[3, 1], vec![0.0; 3]), t("y", &[2], vec![0.0; 2])]), None);
        assert_eq!(rows(&[t("x", &[], vec![0.0])]), None);
    }

    #[test]
    fn split_refuses_outputs_without_the_batch_dim() {
        assert!(split(vec![t("y", &[1], vec![9.0])], &[1, 2]).is_none());
    }
}
