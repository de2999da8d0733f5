//! The rules of the protocol text, by their IDs in the project's
//! requirements catalogue (`requirements.md`: R-IDs for the text's
//! requirements, D-IDs for the rulings on it).
//!
//! A failure names the rule it broke with a [`Rule`], so that a failure
//! persisted and restored, or reported to the application, carries an ID
//! that exists in the catalogue: the list below is the only place an ID is
//! written, and both the enum and [`Rule::ALL`] are generated from it.

#[allow(unused_imports)]
use crate::prelude::*;
macro_rules! rules {
    ($($variant:ident => $id:literal,)*) => {
        /// A rule of the protocol text or a ruling on it.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        #[non_exhaustive]
        pub enum Rule {
            $(
                #[doc = concat!("`", $id, "`")]
                $variant,
            )*
        }

        impl Rule {
            /// Every rule, in catalogue order.
            pub const ALL: &'static [Rule] = &[$(Rule::$variant,)*];

            /// The rule's ID as the catalogue writes it (`"R3.2-e"`).
            pub const fn id(self) -> &'static str {
                match self {
                    $(Rule::$variant => $id,)*
                }
            }
        }
    };
}

rules! {
    R1_a => "R1-a",
    R1_b => "R1-b",
    R1_c => "R1-c",
    R1_d => "R1-d",
    R1_2_a => "R1.2-a",
    R1_2_b => "R1.2-b",
    R1_2_c => "R1.2-c",
    R1_2_d => "R1.2-d",
    R1_2_e => "R1.2-e",
    R2_a => "R2-a",
    R2_1_a => "R2.1-a",
    R2_1_b => "R2.1-b",
    R2_1_c => "R2.1-c",
    R2_1_d => "R2.1-d",
    R2_1_e => "R2.1-e",
    R2_1_f => "R2.1-f",
    R2_2_a => "R2.2-a",
    R2_2_b => "R2.2-b",
    R2_2_c => "R2.2-c",
    R2_2_d => "R2.2-d",
    R2_3_a => "R2.3-a",
    R2_3_b => "R2.3-b",
    R2_4_a => "R2.4-a",
    R2_4_b => "R2.4-b",
    R2_4_c => "R2.4-c",
    R3_a => "R3-a",
    R3_b => "R3-b",
    R3_1_a => "R3.1-a",
    R3_1_b => "R3.1-b",
    R3_1_c => "R3.1-c",
    R3_2_a => "R3.2-a",
    R3_2_b => "R3.2-b",
    R3_2_c => "R3.2-c",
    R3_2_d => "R3.2-d",
    R3_2_e => "R3.2-e",
    R3_3_a => "R3.3-a",
    R3_3_b => "R3.3-b",
    R3_3_c => "R3.3-c",
    R3_3_d => "R3.3-d",
    R3_3_e => "R3.3-e",
    R3_4_a => "R3.4-a",
    R3_4_b => "R3.4-b",
    R3_4_c => "R3.4-c",
    R3_5_a => "R3.5-a",
    R3_5_b => "R3.5-b",
    R3_5_c => "R3.5-c",
    R3_5_d => "R3.5-d",
    R3_5_e => "R3.5-e",
    R3_5_f => "R3.5-f",
    R3_6_a => "R3.6-a",
    R3_6_b => "R3.6-b",
    R3_6_c => "R3.6-c",
    R3_6_d => "R3.6-d",
    R3_6_e => "R3.6-e",
    R4_1_a => "R4.1-a",
    R4_1_b => "R4.1-b",
    R4_1_c => "R4.1-c",
    R4_2_a => "R4.2-a",
    R4_2_b => "R4.2-b",
    R4_2_c => "R4.2-c",
    R4_2_d => "R4.2-d",
    R4_2_e => "R4.2-e",
    R4_2_f => "R4.2-f",
    R5_a => "R5-a",
    R5_b => "R5-b",
    R5_c => "R5-c",
    R5_d => "R5-d",
    R6_1_a => "R6.1-a",
    R6_1_b => "R6.1-b",
    R6_1_c => "R6.1-c",
    R6_1_d => "R6.1-d",
    R6_2_a => "R6.2-a",
    R6_2_b => "R6.2-b",
    R6_2_c => "R6.2-c",
    R6_2_d => "R6.2-d",
    R6_3_a => "R6.3-a",
    R6_3_b => "R6.3-b",
    R6_3_c => "R6.3-c",
    R6_3_d => "R6.3-d",
    R6_3_e => "R6.3-e",
    R6_3_f => "R6.3-f",
    R6_3_g => "R6.3-g",
    D1 => "D1",
    D2 => "D2",
    D3 => "D3",
    D4 => "D4",
    D5 => "D5",
    D6 => "D6",
    D7 => "D7",
    D8 => "D8",
    D9 => "D9",
}

impl Rule {
    /// The rule with catalogue ID `id`, if there is one.
    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.iter().copied().find(|r| r.id() == id)
    }
}

impl core::fmt::Display for Rule {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::Rule;

    #[test]
    fn ids_round_trip_and_are_unique() {
        for (i, r) in Rule::ALL.iter().enumerate() {
            assert_eq!(Rule::from_id(r.id()), Some(*r));
            assert!(Rule::ALL[..i].iter().all(|o| o.id() != r.id()));
        }
        assert_eq!(Rule::from_id("R9-z"), None);
        assert_eq!(Rule::R3_2_e.id(), "R3.2-e");
    }
}
