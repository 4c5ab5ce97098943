//! Named narrowing conversions, for the places where a bare `as` would hide whether the
//! truncation is meant (the workspace warns on `cast_possible_truncation`; fugu ships an i686
//! VMM). Two kinds:
//! - `lo8`/`lo16`/`lo32`/`hi32`: truncation is the point (a register's low byte, the halves
//!   of a u64, a value already masked or reduced below the width);
//! - `const_u8`/`const_u16`/`const_u32`/`const_usize`: a constant that fits, checked when
//!   compiled: call them inside `const { }` so that a constant that does not fit fails the
//!   build instead of truncating.

/// The low 8 bits of `x`.
#[allow(clippy::cast_possible_truncation)] // truncation is the point
pub fn lo8(x: impl Into<u64>) -> u8 {
    x.into() as u8
}

/// The low 16 bits of `x`.
#[allow(clippy::cast_possible_truncation)] // truncation is the point
pub fn lo16(x: impl Into<u64>) -> u16 {
    x.into() as u16
}

/// The low 32 bits of `x`.
#[allow(clippy::cast_possible_truncation)] // truncation is the point
pub const fn lo32(x: u64) -> u32 {
    x as u32
}

/// The high 32 bits of `x`.
pub const fn hi32(x: u64) -> u32 {
    lo32(x >> 32)
}

/// `const fn NAME(x: u64) -> T`: the constant `x` as a `T`; use it in `const { }`, where a
/// value that does not fit (on this target, for usize) fails the build.
macro_rules! const_narrowing {
    ($($name:ident -> $t:ty),* $(,)?) => {$(
        #[doc = concat!("The constant `x` as a ", stringify!($t), " (checked when compiled in `const { }`).")]
        #[allow(clippy::cast_possible_truncation)] // checked by the assert
        pub const fn $name(x: u64) -> $t {
            assert!(x <= <$t>::MAX as u64, concat!("constant does not fit in a ", stringify!($t)));
            x as $t
        }
    )*};
}

const_narrowing!(const_u8 -> u8, const_u16 -> u16, const_u32 -> u32, const_usize -> usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_and_low_bits() {
        assert_eq!(lo8(0x1234u16), 0x34);
        assert_eq!(lo16(0x1_2345u32), 0x2345);
        assert_eq!(lo32(0x1234_5678_9abc_def0), 0x9abc_def0);
        assert_eq!(hi32(0x1234_5678_9abc_def0), 0x1234_5678);
        let cf8 = const { const_u16(0xcf8) };
        assert_eq!(cf8, 0xcf8);
    }
}
