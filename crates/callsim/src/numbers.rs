//! Realistic phone numbers and ids: Chinese mobile numbers, fixed lines with their area
//! code and leading `0`, platform display numbers, binding ids.

use rand::Rng;

/// Mobile prefixes actually in use (second and third digit after the leading 1).
const MOBILE_PREFIXES: [&str; 16] =
    ["130", "131", "132", "135", "136", "138", "139", "150", "152", "158", "166", "177", "180", "186", "189", "199"];

/// Area codes (without the trunk `0`) and the local number length used there.
const AREA_CODES: [(&str, usize); 10] =
    [("10", 8), ("20", 8), ("21", 8), ("22", 8), ("23", 8), ("25", 8), ("27", 8), ("28", 8), ("571", 8), ("755", 8)];

/// Appends `count` random decimal digits to `out`.
fn push_digits<R: Rng + ?Sized>(rng: &mut R, out: &mut String, count: usize) {
    for _ in 0..count {
        out.push(char::from(b'0' + rng.random_range(0..10u8)));
    }
}

/// A mobile number such as `13812345678` (11 digits, `1[3-9]...`).
pub fn mobile<R: Rng + ?Sized>(rng: &mut R) -> String {
    let mut number = MOBILE_PREFIXES[rng.random_range(0..MOBILE_PREFIXES.len())].to_string();
    push_digits(rng, &mut number, 8);
    number
}

/// A fixed-line number with trunk prefix and area code, such as `02188886666`; the local
/// part never starts with 0 or 1.
pub fn fixed<R: Rng + ?Sized>(rng: &mut R) -> String {
    let (area, len) = AREA_CODES[rng.random_range(0..AREA_CODES.len())];
    let mut number = format!("0{area}");
    number.push(char::from(b'0' + rng.random_range(2..10u8)));
    push_digits(rng, &mut number, len - 1);
    number
}

/// A subscriber number: mobile most of the time, fixed line otherwise.
pub fn subscriber<R: Rng + ?Sized>(rng: &mut R) -> String {
    if rng.random_bool(0.75) {
        mobile(rng)
    } else {
        fixed(rng)
    }
}

/// A platform display number used by the callback service, such as `4008123456`.
pub fn platform<R: Rng + ?Sized>(rng: &mut R) -> String {
    let mut number = String::from("400");
    number.push(char::from(b'0' + rng.random_range(1..10u8)));
    push_digits(rng, &mut number, 6);
    number
}

/// A binding (subscription) id such as `S3f9a0c1d2e4b5a6c`.
pub fn subscription_id<R: Rng + ?Sized>(rng: &mut R) -> String {
    format!("S{:016x}", rng.random::<u64>())
}

/// An extension behind a privacy number (AXNE), such as `6021`.
pub fn extension<R: Rng + ?Sized>(rng: &mut R) -> String {
    let mut number = String::new();
    number.push(char::from(b'1' + rng.random_range(0..9u8)));
    push_digits(rng, &mut number, 3);
    number
}

/// A number pool id, such as `NP021843`.
pub fn number_pool<R: Rng + ?Sized>(rng: &mut R) -> String {
    let mut id = String::from("NP");
    push_digits(rng, &mut id, 6);
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn numbers_look_real() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..1000 {
            let m = mobile(&mut rng);
            assert_eq!(m.len(), 11);
            assert!(m.starts_with('1') && (b'3'..=b'9').contains(&m.as_bytes()[1]));
            assert!(m.bytes().all(|b| b.is_ascii_digit()));
            let f = fixed(&mut rng);
            assert!(f.starts_with('0') && (10..=12).contains(&f.len()), "{f}");
            let p = platform(&mut rng);
            assert!(p.starts_with("400") && p.len() == 10);
            assert_eq!(subscription_id(&mut rng).len(), 17);
        }
    }
}
