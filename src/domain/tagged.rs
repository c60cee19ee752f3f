//! Enums written as one JSON object whose first field names the variant (`{"op":"settle",…}`), read
//! without buffering.
//!
//! serde's own internally tagged enums (`#[serde(tag = "op")]`) accept the tag anywhere in the object,
//! so they read every message twice: first into serde's buffered `Content`, then from it into the
//! variant. That costs an allocation per field on every object message and a second copy of every
//! message type's deserializer in the wasm. Every writer of these enums is this crate, and it writes the
//! tag first, so the reader here takes the tag from the first field and reads the rest of the object
//! straight into the variant.
//!
//! A type opts in with `#[serde(remote = "Self")]` on its derives (the derived code becomes inherent
//! `serialize` / `deserialize` functions in serde's default, externally tagged form) and
//! `tag_first!(Type, "tag")`, which implements `Serialize` and `Deserialize` around them. A struct
//! variant's fields, and a newtype variant's struct's fields (what `#[serde(flatten)]` would give),
//! follow the tag in the same object; a unit variant is the tag alone.
//!
//! Such a value must not travel through a `serde_json::Value` (or anything else that reorders an
//! object's fields): `Value`'s maps are sorted by key, so the tag may no longer come first.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::ser::{self, Impossible, Serialize, SerializeMap, SerializeStruct, SerializeStructVariant, Serializer};

/// Implements `Serialize` and `Deserialize` for `$ty` (derived with `#[serde(remote = "Self")]`) as an
/// object whose first field `$tag` names the variant.
#[macro_export]
macro_rules! tag_first {
    ($ty:ty, $tag:literal) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$ty>::serialize(self, $crate::domain::tagged::Writer::new($tag, s))
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Object;
                impl<'de> serde::de::Visitor<'de> for Object {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        write!(f, "an object whose first field is `{}`", $tag)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                        <$ty>::deserialize($crate::domain::tagged::Reader::new($tag, map))
                    }
                }
                d.deserialize_map(Object)
            }
        }
    };
}

/// Reads the externally tagged form serde derives from an object whose first field is the tag.
pub struct Reader<A> {
    tag: &'static str,
    map: A,
}

impl<A> Reader<A> {
    pub fn new(tag: &'static str, map: A) -> Self {
        Reader { tag, map }
    }
}

impl<'de, A: MapAccess<'de>> de::Deserializer<'de> for Reader<A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, A: MapAccess<'de>> de::EnumAccess<'de> for Reader<A> {
    type Error = A::Error;
    type Variant = Rest<A>;

    fn variant_seed<V: DeserializeSeed<'de>>(mut self, seed: V) -> Result<(V::Value, Rest<A>), A::Error> {
        match self.map.next_key_seed(IsTag(self.tag))? {
            Some(true) => {}
            Some(false) => return Err(de::Error::custom(format_args!("`{}` must be the first field", self.tag))),
            None => return Err(de::Error::missing_field(self.tag)),
        }
        let variant = self.map.next_value_seed(seed)?;
        Ok((variant, Rest(self.map)))
    }
}

/// The fields after the tag.
pub struct Rest<A>(A);

impl<'de, A: MapAccess<'de>> de::VariantAccess<'de> for Rest<A> {
    type Error = A::Error;

    fn unit_variant(mut self) -> Result<(), A::Error> {
        while self.0.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, A::Error> {
        Err(de::Error::custom("a tagged object has no tuple variants"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_map(self.0)
    }
}

impl<'de, A: MapAccess<'de>> de::Deserializer<'de> for Rest<A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_map(self.0)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// Whether a key is the tag (read without allocating).
struct IsTag(&'static str);

impl<'de> DeserializeSeed<'de> for IsTag {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for IsTag {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// Writes the externally tagged form serde derives as one object, the tag first.
pub struct Writer<S> {
    tag: &'static str,
    out: S,
}

impl<S> Writer<S> {
    pub fn new(tag: &'static str, out: S) -> Self {
        Writer { tag, out }
    }
}

fn only_variants<E: ser::Error>() -> E {
    E::custom("a tagged object is written from an enum's unit, newtype or struct variant")
}

/// The methods of `Serializer` a writer refuses: everything but what is listed by name.
macro_rules! refuse {
    ($($method:ident($($arg:ty),*);)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<Self::Ok, Self::Error> { Err(only_variants()) })*
        fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<Self::Ok, Self::Error> {
            Err(only_variants())
        }
        fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, _: &T) -> Result<Self::Ok, Self::Error> {
            Err(only_variants())
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
            Err(only_variants())
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Self::Error> {
            Err(only_variants())
        }
        fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Self::Error> {
            Err(only_variants())
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Self::Error> {
            Err(only_variants())
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
            Err(only_variants())
        }
    };
}

impl<S: Serializer> Serializer for Writer<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Impossible<S::Ok, S::Error>;
    type SerializeTuple = Impossible<S::Ok, S::Error>;
    type SerializeTupleStruct = Impossible<S::Ok, S::Error>;
    type SerializeTupleVariant = Impossible<S::Ok, S::Error>;
    type SerializeMap = Impossible<S::Ok, S::Error>;
    type SerializeStruct = Impossible<S::Ok, S::Error>;
    type SerializeStructVariant = Fields<S::SerializeMap>;

    refuse! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32); serialize_i64(i64);
        serialize_u8(u8); serialize_u16(u16); serialize_u32(u32); serialize_u64(u64); serialize_f32(f32);
        serialize_f64(f64); serialize_char(char); serialize_str(&str); serialize_bytes(&[u8]); serialize_none();
        serialize_unit(); serialize_unit_struct(&'static str);
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, S::Error> {
        Err(only_variants())
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<S::Ok, S::Error> {
        let mut map = self.out.serialize_map(Some(1))?;
        map.serialize_entry(self.tag, variant)?;
        map.end()
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let mut map = self.out.serialize_map(None)?;
        map.serialize_entry(self.tag, variant)?;
        value.serialize(Inline(&mut map))?;
        map.end()
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Fields<S::SerializeMap>, S::Error> {
        let mut map = self.out.serialize_map(Some(len + 1))?;
        map.serialize_entry(self.tag, variant)?;
        Ok(Fields(map))
    }
}

/// A struct variant's fields, after the tag.
pub struct Fields<M>(M);

impl<M: SerializeMap> SerializeStructVariant for Fields<M> {
    type Ok = M::Ok;
    type Error = M::Error;

    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<(), M::Error> {
        self.0.serialize_entry(key, value)
    }

    fn end(self) -> Result<M::Ok, M::Error> {
        self.0.end()
    }
}

/// A newtype variant's struct, written as fields of the object the tag opened.
struct Inline<'a, M>(&'a mut M);

impl<'a, M: SerializeMap> Serializer for Inline<'a, M> {
    type Ok = ();
    type Error = M::Error;
    type SerializeSeq = Impossible<(), M::Error>;
    type SerializeTuple = Impossible<(), M::Error>;
    type SerializeTupleStruct = Impossible<(), M::Error>;
    type SerializeTupleVariant = Impossible<(), M::Error>;
    type SerializeMap = Impossible<(), M::Error>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), M::Error>;

    refuse! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32); serialize_i64(i64);
        serialize_u8(u8); serialize_u16(u16); serialize_u32(u32); serialize_u64(u64); serialize_f32(f32);
        serialize_f64(f64); serialize_char(char); serialize_str(&str); serialize_bytes(&[u8]); serialize_none();
        serialize_unit(); serialize_unit_struct(&'static str); serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), M::Error> {
        Err(only_variants())
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, M::Error> {
        Err(only_variants())
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, M::Error> {
        Ok(self)
    }
}

impl<'a, M: SerializeMap> SerializeStruct for Inline<'a, M> {
    type Ok = ();
    type Error = M::Error;

    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<(), M::Error> {
        self.0.serialize_entry(key, value)
    }

    fn end(self) -> Result<(), M::Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(remote = "Self", rename_all = "snake_case")]
    enum Message {
        Ping,
        Settle {
            account_id: String,
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            leases: Vec<String>,
            nested: Option<Inner>,
        },
        Reserve(Ask),
    }
    tag_first!(Message, "op");

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Ask {
        request_id: String,
        worst_case: i64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(remote = "Self", rename_all = "snake_case")]
    enum Inner {
        Full { amount: i64 },
        None,
    }
    tag_first!(Inner, "decision");

    /// What serde's own internally tagged derive writes and reads (the form before `tag_first!`).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "op", rename_all = "snake_case")]
    enum Serde {
        Ping,
        Settle {
            account_id: String,
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            leases: Vec<String>,
            nested: Option<SerdeInner>,
        },
        Reserve {
            #[serde(flatten)]
            ask: Ask,
        },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "decision", rename_all = "snake_case")]
    enum SerdeInner {
        Full { amount: i64 },
        None,
    }

    #[test]
    fn the_json_is_what_serdes_internally_tagged_derive_writes_and_reads() {
        let ask = Ask { request_id: "r".into(), worst_case: 9 };
        let pairs = [
            (Message::Ping, Serde::Ping),
            (
                Message::Settle { account_id: "u".into(), leases: vec![], nested: Some(Inner::Full { amount: 5 }) },
                Serde::Settle { account_id: "u".into(), leases: vec![], nested: Some(SerdeInner::Full { amount: 5 }) },
            ),
            (
                Message::Settle { account_id: "u".into(), leases: vec!["l".into()], nested: Some(Inner::None) },
                Serde::Settle { account_id: "u".into(), leases: vec!["l".into()], nested: Some(SerdeInner::None) },
            ),
            (Message::Reserve(ask.clone()), Serde::Reserve { ask }),
        ];
        for (ours, serdes) in pairs {
            let (written, expected) =
                (serde_json::to_string(&ours).expect("ours"), serde_json::to_string(&serdes).expect("serde's"));
            assert_eq!(written, expected);
            assert_eq!(serde_json::from_str::<Serde>(&written).expect("serde reads ours"), serdes);
            assert_eq!(serde_json::from_str::<Message>(&expected).expect("ours reads serde's"), ours);
        }
    }

    fn round_trip(message: Message, json: &str) {
        assert_eq!(serde_json::to_string(&message).expect("write"), json);
        assert_eq!(serde_json::from_str::<Message>(json).expect("read"), message);
    }

    #[test]
    fn each_kind_of_variant_is_one_object_with_the_tag_first() {
        round_trip(Message::Ping, r#"{"op":"ping"}"#);
        round_trip(
            Message::Settle { account_id: "u1".into(), leases: vec![], nested: Some(Inner::Full { amount: 5 }) },
            r#"{"op":"settle","account_id":"u1","nested":{"decision":"full","amount":5}}"#,
        );
        round_trip(
            Message::Settle { account_id: "u1".into(), leases: vec!["l".into()], nested: Some(Inner::None) },
            r#"{"op":"settle","account_id":"u1","leases":["l"],"nested":{"decision":"none"}}"#,
        );
        round_trip(
            Message::Reserve(Ask { request_id: "r".into(), worst_case: 9 }),
            r#"{"op":"reserve","request_id":"r","worst_case":9}"#,
        );
        let many = vec![Message::Ping, Message::Reserve(Ask { request_id: "r".into(), worst_case: 1 })];
        let json = serde_json::to_string(&many).expect("write");
        assert_eq!(serde_json::from_str::<Vec<Message>>(&json).expect("read"), many);
    }

    #[test]
    fn unknown_fields_are_ignored_as_serde_does_and_defaults_apply() {
        let read: Message =
            serde_json::from_str(r#"{"op":"settle","account_id":"u","later":[1,{"a":2}]}"#).expect("read");
        assert_eq!(read, Message::Settle { account_id: "u".into(), leases: vec![], nested: None });
        assert_eq!(serde_json::from_str::<Message>(r#"{"op":"ping","extra":true}"#).expect("read"), Message::Ping);
    }

    #[test]
    fn a_tag_not_first_a_missing_tag_or_an_unknown_variant_is_an_error_naming_it() {
        let error = |json: &str| serde_json::from_str::<Message>(json).expect_err(json).to_string();
        assert!(error(r#"{"account_id":"u","op":"settle"}"#).contains("`op` must be the first field"));
        assert!(error(r#"{}"#).contains("missing field `op`"));
        assert!(error(r#"{"op":"fly"}"#).contains("unknown variant `fly`"));
        assert!(error(r#"{"op":"settle"}"#).contains("missing field `account_id`"));
        assert!(error(r#"["ping"]"#).contains("first field is `op`"));
        assert!(error(r#"{"op":"reserve","request_id":"r"}"#).contains("missing field `worst_case`"));
    }
}
